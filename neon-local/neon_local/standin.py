"""A local stand-in for Neon's two endpoints.

A real PostgreSQL (the direct endpoint) and a real PgBouncer in ``pool_mode = transaction``
in front of it (the pooled endpoint), both on 127.0.0.1, TLS-only with SCRAM-SHA-256, with a
database ``neondb`` owned by ``neondb_owner``. Everything lives in one state folder, so
``down`` (or deleting the folder) leaves nothing behind.

The steps live here; how processes run is in ``processes.py``, the configuration files in
``configs.py``, the certificate in ``tls.py`` and which binaries are used in ``binaries.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from neon_connect._urls import build_url, mask_url

from . import DEFAULT_DIR
from . import processes as proc
from .binaries import Binaries, find_binaries, version_of
from .configs import DATABASE as DATABASE  # re-exported: faults.py and tests import it here
from .configs import OWNER as OWNER  # re-exported: tests import it here
from .configs import (
    PG_HBA,
    SUPERUSER,
    max_prepared_statements,
    pgbouncer_ini,
    postgresql_conf,
)
from .errors import StandInError
from .processes import HOST
from .replica import stop_replicas
from .tls import make_certificate

__all__ = ["DEFAULT_DIR", "LocalNeon", "StandInState"]

STATE_FILE = "state.json"


@dataclass(frozen=True)
class StandInState:
    """What ``up`` started; saved as ``state.json`` in the state folder."""

    directory: str
    runtime_dir: str
    pg_port: int
    pooler_port: int
    password: str
    superuser_password: str
    pool_size: int
    max_connections: int
    run_as: str | None
    pg_version: str
    pgbouncer_version: str
    pgbouncer: str = ""
    """The PgBouncer binary that runs (the copy in the runtime folder, if one was needed)."""
    max_prepared_statements: int = 0
    """PgBouncer's setting: > 0 when the pooler tracks protocol-level prepared statements."""
    databases: tuple[str, ...] = ()
    """Extra databases beside ``neondb`` (``--database``), each owned by ``neondb_owner``."""
    proxy_pooled_port: int = 0
    """The Neon-like proxy's port in front of PgBouncer; 0 when the stand-in runs without it."""
    proxy_direct_port: int = 0
    """The Neon-like proxy's port in front of PostgreSQL; 0 without it."""

    def __repr__(self) -> str:
        return (
            f"StandInState(pooled={HOST}:{self._pooled_port}, direct={HOST}:{self._direct_port}, "
            f"proxied={self.proxied}, directory={self.directory!r})"
        )

    @property
    def proxied(self) -> bool:
        """Whether the exported URLs go through the Neon-like proxy (``neon_proxy.py``)."""
        return self.proxy_pooled_port != 0

    @property
    def _pooled_port(self) -> int:
        return self.proxy_pooled_port or self.pooler_port

    @property
    def _direct_port(self) -> int:
        return self.proxy_direct_port or self.pg_port

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's and hypothesis's printers list a dataclass's fields, the passwords among
        them, unless the class prints itself: this repr, which has none."""
        printer.text(repr(self))

    def _url(
        self,
        port: int,
        *,
        user: str = OWNER,
        password: str | None = None,
        db: str = DATABASE,
        exported: bool = False,
    ) -> str:
        """``exported``: a URL the stand-in hands out, written as Neon's console writes it when
        the proxy, which offers channel binding, is in front."""
        binding = exported and self.proxied
        return build_url(
            host=HOST,
            port=port,
            user=user,
            password=password if password is not None else self.password,
            database=db,
            params={"sslmode": "require", **({"channel_binding": "require"} if binding else {})},
        )

    def url_for(self, database: str, *, pooled: bool = True) -> str:
        """An extra database's pooled (default) or direct URL."""
        if database not in (DATABASE, *self.databases):
            raise StandInError(
                f"the stand-in has no database {database!r}; ask for it with "
                f"neon-local up --database {database}"
            )
        port = self._pooled_port if pooled else self._direct_port
        return self._url(port, db=database, exported=True)

    @property
    def pooled_url(self) -> str:
        """``DATABASE_URL``: to PgBouncer, through the proxy unless the stand-in runs without."""
        return self._url(self._pooled_port, exported=True)

    @property
    def direct_url(self) -> str:
        """``DATABASE_URL_UNPOOLED``: to PostgreSQL, through the proxy unless without."""
        return self._url(self._direct_port, exported=True)

    @property
    def pgbouncer_url(self) -> str:
        """``DATABASE_URL`` without the proxy: PgBouncer itself, as a client sees it."""
        return self._url(self.pooler_port)

    @property
    def postgres_url(self) -> str:
        """``DATABASE_URL_UNPOOLED`` without the proxy: PostgreSQL itself."""
        return self._url(self.pg_port)

    @property
    def superuser_url(self) -> str:
        """A superuser on PostgreSQL itself, for fault injection in tests."""
        return self._url(
            self.pg_port, user=SUPERUSER, password=self.superuser_password, db="postgres"
        )

    @property
    def admin_url(self) -> str:
        """PgBouncer's admin console (``SHOW STATS``, ``PAUSE``, ``RESUME``)."""
        return self._url(self.pooler_port, db="pgbouncer")

    def env(self) -> dict[str, str]:
        """``DATABASE_URL`` and ``DATABASE_URL_UNPOOLED``, plus ``DATABASE_URL_<NAME>`` and
        ``DATABASE_URL_<NAME>_UNPOOLED`` for each extra database."""
        env = {"DATABASE_URL": self.pooled_url, "DATABASE_URL_UNPOOLED": self.direct_url}
        for name in self.databases:
            env[f"DATABASE_URL_{name.upper()}"] = self.url_for(name)
            env[f"DATABASE_URL_{name.upper()}_UNPOOLED"] = self.url_for(name, pooled=False)
        return env

    def export_lines(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())

    def describe(self) -> str:
        """A human summary with the passwords masked."""
        return (
            (
                "through a Neon-like proxy (direct TLS, channel binding; bypass: "
                f"{mask_url(self.pgbouncer_url)} and {mask_url(self.postgres_url)})\n"
                if self.proxied
                else "without the Neon-like proxy: clients reach PgBouncer and PostgreSQL "
                "themselves (no direct TLS, no channel binding)\n"
            )
            + f"pooled (PgBouncer {self.pgbouncer_version}, transaction mode, pool {self.pool_size}, "
            f"max_prepared_statements {self.max_prepared_statements}): "
            f"{mask_url(self.pooled_url)}\n"
            f"direct (PostgreSQL {self.pg_version}, max_connections {self.max_connections}): "
            f"{mask_url(self.direct_url)}\n"
            + "".join(
                f"database {name}: DATABASE_URL_{name.upper()}[_UNPOOLED]\n"
                for name in self.databases
            )
            + (
                ""
                if self.max_prepared_statements
                else f"warning: PgBouncer {self.pgbouncer_version} is older than Neon's (>= 1.22): "
                "it does not track prepared statements, so tests here can pass where Neon fails\n"
            )
        )


class LocalNeon:
    """Start, inspect and stop the stand-in kept in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str] = DEFAULT_DIR,
        *,
        pool_size: int = 5,
        max_connections: int = 100,
        pg_port: int | None = None,
        pooler_port: int | None = None,
        pgbouncer: str | os.PathLike[str] | None = None,
        databases: Sequence[str] = (),
        start_timeout: float = 30.0,
        passwords: tuple[str, str] | None = None,
        proxy: bool | None = None,
        proxy_ports: tuple[int, int] | None = None,
    ) -> None:
        for name in databases:
            _check_database_name(name)
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        if max_connections < pool_size + 5:
            raise ValueError("max_connections must be at least pool_size + 5")
        self.directory = Path(directory).absolute()
        self.pool_size = pool_size
        self.max_connections = max_connections
        self.pg_port = pg_port
        self.pooler_port = pooler_port
        self.pgbouncer = pgbouncer
        self.databases = tuple(dict.fromkeys(databases))
        self.passwords = passwords  # (owner, superuser): chosen ahead by plan(), else at up()
        self.proxy = proxy  # None: $NEON_LOCAL_PROXY, read at up(), else on
        self.proxy_ports = proxy_ports  # (pooled, direct): chosen ahead by plan(), else at up()
        self.start_timeout = start_timeout

    def __repr__(self) -> str:
        return f"LocalNeon({str(self.directory)!r})"

    # -- public API -------------------------------------------------------------------

    def state(self) -> StandInState | None:
        """The saved state, or ``None`` when nothing was started here."""
        path = self.directory / STATE_FILE
        try:
            saved = json.loads(path.read_text())
            saved["databases"] = tuple(saved.get("databases", ()))
            return StandInState(**saved)
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {
                "running": False,
                "postgres": False,
                "pgbouncer": False,
                "proxy": False,
                "directory": str(self.directory),
            }
        pg = proc.alive(_postgres_pid(state)) and proc.port_open(state.pg_port)
        bouncer = proc.alive(_pgbouncer_pid(state)) and proc.port_open(state.pooler_port)
        proxy = not state.proxied or (
            proc.alive(_proxy_pid(state))
            and proc.port_open(state.proxy_pooled_port)
            and proc.port_open(state.proxy_direct_port)
        )
        return {
            "running": pg and bouncer and proxy,
            "postgres": pg,
            "pgbouncer": bouncer,
            "proxy": state.proxied and proxy,
            "directory": str(self.directory),
            "pooled": mask_url(state.pooled_url),
            "direct": mask_url(state.direct_url),
            "pgbouncer_version": state.pgbouncer_version,
            "max_prepared_statements": state.max_prepared_statements,
            "postgres_version": state.pg_version,
        }

    def up(self) -> StandInState:
        """Start the pair, or return the running one. A folder left by a killed run is cleared."""
        state = self.state()
        if state is not None:
            status = self.status()
            if status["running"]:
                return self._add_databases(state)
            if status["postgres"] and status["pgbouncer"]:  # only the proxy is gone
                self._start_proxy(state)
                return self._add_databases(state)
            self._stop(state)
        if self.directory.exists():
            self._remove(self.state())
        binaries = find_binaries(pgbouncer=self.pgbouncer)
        run_as = proc.unprivileged_user()
        pg_port = self._port(self.pg_port, "--pg-port")
        pooler_port = self._port(self.pooler_port, "--pooler-port", avoid={pg_port})
        proxy_ports = self._proxy_ports(avoid={pg_port, pooler_port}) if self.proxied() else (0, 0)
        self.directory.mkdir(parents=True, mode=0o700)
        # Passwords (state.json, userlist.txt) and a private key live here: never commit them.
        proc.write_file(self.directory / ".gitignore", _GITIGNORE, mode=0o600)
        try:
            runtime = self._runtime_dir(run_as)
            state = StandInState(
                directory=str(self.directory),
                runtime_dir=str(runtime),
                pg_port=pg_port,
                pooler_port=pooler_port,
                password=self.passwords[0] if self.passwords else _password(),
                superuser_password=self.passwords[1] if self.passwords else _password(),
                pool_size=self.pool_size,
                max_connections=self.max_connections,
                run_as=run_as,
                pg_version=version_of(binaries.postgres),
                pgbouncer_version=version_of(binaries.pgbouncer),
                pgbouncer=str(binaries.pgbouncer),
                max_prepared_statements=max_prepared_statements(version_of(binaries.pgbouncer)),
                databases=self.databases,
                proxy_pooled_port=proxy_ports[0],
                proxy_direct_port=proxy_ports[1],
            )
            state = self._reachable_pgbouncer(state)
            self._save(state)
            make_certificate(binaries.openssl, runtime, owner=run_as)
            self._start_postgres(binaries, state)
            self._create_database(state)
            self._start_pgbouncer(state)
            if state.proxied:
                self._start_proxy(state)
        except BaseException:
            with contextlib.suppress(Exception):
                self.down()
            raise
        return state

    def down(self) -> bool:
        """Stop both servers and remove the folder. Returns whether anything was there."""
        state = self.state()
        existed = self.directory.exists()
        if state is not None:
            self._stop(state)
        self._remove(state)
        return existed

    # -- steps ------------------------------------------------------------------------

    def _port(self, wanted: int | None, option: str, avoid: Collection[int] = ()) -> int:
        if wanted is None:
            while True:
                port = proc.free_port()
                if port not in avoid:
                    return port
        if not proc.port_free(wanted):
            raise StandInError(f"port {wanted} on {HOST} is busy; choose another with {option}")
        return wanted

    def proxied(self) -> bool:
        """Whether ``up`` starts the Neon-like proxy: the ``proxy`` option, else
        ``$NEON_LOCAL_PROXY``, else yes."""
        return proxy_wanted() if self.proxy is None else self.proxy

    def _proxy_ports(self, *, avoid: set[int]) -> tuple[int, int]:
        pooled, direct = self.proxy_ports or (None, None)
        pooled_port = self._port(pooled, "proxy_ports=", avoid=avoid)
        return pooled_port, self._port(direct, "proxy_ports=", avoid={*avoid, pooled_port})

    def _runtime_dir(self, run_as: str | None) -> Path:
        """Where the servers keep their files: the state folder, unless its user cannot reach it."""
        if run_as is None:
            return self.directory
        proc.chown(self.directory, run_as)
        if proc.can(run_as, "-w", self.directory):
            return self.directory
        # e.g. a checkout under /root: keep the servers' files where that user can go.
        runtime = Path(tempfile.mkdtemp(prefix="neon-local-"))
        proc.chown(runtime, run_as)
        return runtime

    def _reachable_pgbouncer(self, state: StandInState) -> StandInState:
        """A copy of PgBouncer in the runtime folder when the server user cannot run the one
        chosen (e.g. built into root's cache under ``/root``, which ``postgres`` cannot enter)."""
        if state.run_as is None or proc.can(state.run_as, "-x", Path(state.pgbouncer)):
            return state
        copy = Path(state.runtime_dir) / "pgbouncer"
        shutil.copy2(state.pgbouncer, copy)
        os.chmod(copy, 0o755)
        return replace(state, pgbouncer=str(copy))

    def _start_postgres(self, binaries: Binaries, state: StandInState) -> None:
        runtime = Path(state.runtime_dir)
        data = runtime / "data"
        pwfile = runtime / "superuser.pw"
        proc.write_file(pwfile, state.superuser_password + "\n", mode=0o600, owner=state.run_as)
        try:
            proc.run(
                [
                    str(binaries.initdb), "-D", str(data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                    "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "-N",
                ],
                what="initdb",
                run_as=state.run_as,
                cwd=runtime,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with open(data / "postgresql.conf", "a") as f:
            f.write(
                postgresql_conf(
                    runtime=runtime, port=state.pg_port, max_connections=state.max_connections
                )
            )
        (data / "pg_hba.conf").write_text(PG_HBA)
        log = runtime / "postgres.log"
        result = proc.run(
            [
                str(binaries.pg_ctl), "-D", str(data), "-l", str(log), "-w",
                "-t", str(int(self.start_timeout)), "start",
            ],
            what="PostgreSQL",
            run_as=state.run_as,
            cwd=runtime,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StandInError(f"PostgreSQL did not start on port {state.pg_port}{proc.tail(log)}")

    def _add_databases(self, state: StandInState) -> StandInState:
        """``up --database NAME`` on a running stand-in: create what is new, keep the rest."""
        new = tuple(name for name in self.databases if name not in state.databases)
        if not new:
            return state
        self._create_database(state, new)
        state = replace(state, databases=state.databases + new)
        self._save(state)
        return state

    def _save(self, state: StandInState) -> None:
        proc.write_file(
            self.directory / STATE_FILE, json.dumps(asdict(state), indent=2), mode=0o600
        )

    def _create_database(self, state: StandInState, names: Sequence[str] = ()) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(state.superuser_url, autocommit=True, connect_timeout=10) as conn:
            if not names:  # the first start: the owner and neondb, then the extra ones
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                        sql.Identifier(OWNER), sql.Literal(state.password)
                    )
                )
            for name in names or (DATABASE, *state.databases):
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(name), sql.Identifier(OWNER)
                    )
                )

    def _start_pgbouncer(self, state: StandInState) -> None:
        runtime = Path(state.runtime_dir)
        users = runtime / "userlist.txt"
        proc.write_file(users, f'"{OWNER}" "{state.password}"\n', mode=0o600, owner=state.run_as)
        ini = runtime / "pgbouncer.ini"
        log = runtime / "pgbouncer.log"
        text = pgbouncer_ini(
            runtime=runtime,
            pg_port=state.pg_port,
            listen_port=state.pooler_port,
            owner=OWNER,
            pool_size=state.pool_size,
            prepared_statements=state.max_prepared_statements,
        )
        proc.write_file(ini, text, mode=0o644, owner=state.run_as)
        result = proc.run(
            [state.pgbouncer, "-d", str(ini)],
            what="PgBouncer",
            run_as=state.run_as,
            cwd=runtime,
            check=False,
        )
        deadline = time.monotonic() + self.start_timeout
        while result.returncode == 0 and time.monotonic() < deadline:
            if proc.port_open(state.pooler_port) and proc.alive(_pgbouncer_pid(state)):
                return
            time.sleep(0.05)
        detail = result.stderr.strip().splitlines()[-1:] if result.stderr else []
        raise StandInError(
            f"PgBouncer did not start on port {state.pooler_port}"
            f"{': ' + detail[0] if detail else ''}{proc.tail(log)}"
        )

    def _start_proxy(self, state: StandInState) -> None:
        """The Neon-like proxy as a daemon of its own, so it outlives ``neon-local up``."""
        from . import proxy_daemon

        log = self.directory / "proxy.err"
        with open(log, "ab") as out:
            started = subprocess.run(
                [sys.executable, "-m", proxy_daemon.MODULE, str(self.directory)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        deadline = time.monotonic() + (self.start_timeout if started.returncode == 0 else 0)
        while time.monotonic() < deadline:
            if self.status()["proxy"]:
                return
            time.sleep(0.05)
        raise StandInError(
            f"the Neon-like proxy did not start on ports {state.proxy_pooled_port} and "
            f"{state.proxy_direct_port}; run without it with --no-proxy{proc.tail(log)}"
        )

    def _stop(self, state: StandInState) -> None:
        proxy = _proxy_pid(state)
        if proc.alive(proxy):
            proc.terminate(proxy)
        stop_replicas(state)  # before the primary, whose folder holds theirs
        bouncer = _pgbouncer_pid(state)
        if proc.alive(bouncer):
            proc.terminate(bouncer)
        pg = _postgres_pid(state)
        if pg is not None and proc.alive(pg):
            with contextlib.suppress(OSError):
                os.kill(pg, signal.SIGINT)  # fast shutdown: disconnect clients, then stop
            if not proc.wait_dead(pg, 15):
                proc.terminate(pg)

    def _remove(self, state: StandInState | None) -> None:
        if state is not None and state.runtime_dir != str(self.directory):
            shutil.rmtree(state.runtime_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


_GITIGNORE = "# neon-local: passwords, a private key and server data; never commit\n*\n"

_RESERVED = {DATABASE, "postgres", "pgbouncer", "template0", "template1", "replica", "unpooled"}


def _check_database_name(name: str) -> None:
    """A lower-case identifier, so its variable name (``DATABASE_URL_<NAME>``) is unambiguous."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name in _RESERVED:
        raise StandInError(
            f"--database {name!r}: use a lower-case name of letters, digits and underscores "
            f"(not {', '.join(sorted(_RESERVED))}); it becomes DATABASE_URL_<NAME>"
        )


def _password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "npg_" + "".join(secrets.choice(alphabet) for _ in range(16))


def _postgres_pid(state: StandInState) -> int | None:
    return proc.read_pid(Path(state.runtime_dir) / "data" / "postmaster.pid")


def _pgbouncer_pid(state: StandInState) -> int | None:
    return proc.read_pid(Path(state.runtime_dir) / "pgbouncer.pid")


def _proxy_pid(state: StandInState) -> int | None:
    """The proxy daemon's pid, if that process is still this stand-in's proxy (a pid left by a
    killed one may belong to another process by now, another stand-in's proxy among them,
    which ``down`` must not stop)."""
    from . import proxy_daemon

    pid = proc.read_pid(Path(state.directory) / proxy_daemon.PID_FILE) if state.proxied else None
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if pid else []
    except OSError:
        return None
    ours = [proxy_daemon.MODULE.encode(), state.directory.encode()]
    return pid if command[-3:-1] == ours else None


PROXY_VARIABLE = "NEON_LOCAL_PROXY"


def proxy_wanted(value: str | None = None) -> bool:
    """Whether to start the Neon-like proxy: ``value`` (an ini option), else
    ``$NEON_LOCAL_PROXY``; on unless it says ``off``."""
    chosen = (value or os.environ.get(PROXY_VARIABLE) or "on").strip().lower()
    if chosen in ("on", "1", "true", "yes"):
        return True
    if chosen in ("off", "0", "false", "no"):
        return False
    raise StandInError(
        f"{PROXY_VARIABLE}={chosen!r} (or the pytest ini option neon_local_proxy): say 'on' "
        "(exported URLs through the Neon-like proxy, the default) or 'off' (straight to "
        "PgBouncer and PostgreSQL)"
    )


def plan(
    *, pool_size: int = 5, max_connections: int = 100, proxy: bool | None = None
) -> StandInState:
    """A stand-in's ports and passwords, chosen now and started later (``running(**planned_
    options(state))``): a settings module can read its URLs at import time while a run of
    pure tests starts nothing. Nothing listens yet; versions are unknown until it starts."""
    ports: list[int] = []
    while len(ports) < 4:
        port = proc.free_port()
        if port not in ports:
            ports.append(port)
    proxied = proxy_wanted() if proxy is None else proxy
    pg_port, pooler_port, *proxy_ports = ports if proxied else [*ports[:2], 0, 0]
    return StandInState(
        directory="",
        runtime_dir="",
        pg_port=pg_port,
        pooler_port=pooler_port,
        password=_password(),
        superuser_password=_password(),
        pool_size=pool_size,
        max_connections=max_connections,
        run_as=None,
        pg_version="",
        pgbouncer_version="",
        proxy_pooled_port=proxy_ports[0],
        proxy_direct_port=proxy_ports[1],
    )


def planned_options(state: StandInState) -> dict[str, Any]:
    """The :class:`LocalNeon` options that start what :func:`plan` chose."""
    return {
        "pool_size": state.pool_size,
        "max_connections": state.max_connections,
        "pg_port": state.pg_port,
        "pooler_port": state.pooler_port,
        "passwords": (state.password, state.superuser_password),
        "proxy": state.proxied,
        "proxy_ports": (state.proxy_pooled_port, state.proxy_direct_port),
    }


@contextlib.contextmanager
def running(
    directory: str | os.PathLike[str] | None = None, **options: Any
) -> Iterator[StandInState]:
    """Start a stand-in in ``directory`` (a new temporary folder by default) and stop it after."""
    if directory is None:
        parent = Path(tempfile.mkdtemp(prefix="neon-local-"))
        parent.chmod(0o755)  # let the unprivileged server user reach the folder when run as root
        folder = parent / "state"
    else:
        folder = Path(directory)
    local = LocalNeon(folder, **options)
    try:
        yield local.up()
    finally:
        local.down()
        if directory is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
