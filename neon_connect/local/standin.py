"""A local stand-in for Neon's two endpoints.

A real PostgreSQL (the direct endpoint) and a real PgBouncer in ``pool_mode = transaction``
in front of it (the pooled endpoint), both on 127.0.0.1, TLS-only with SCRAM-SHA-256, with a
database ``neondb`` owned by ``neondb_owner``. Everything lives in one state folder, so
``down`` (or deleting the folder) leaves nothing behind.

PostgreSQL and PgBouncer both refuse to run as root; when started by root the servers run
as the unprivileged ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import resource
import secrets
import shlex
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from neon_connect.urls import build_url, mask_url

from .binaries import Binaries, find_binaries
from .errors import StandInError

__all__ = ["DEFAULT_DIR", "LocalNeon", "StandInState"]

DEFAULT_DIR = ".neon-local"
STATE_FILE = "state.json"
DATABASE = "neondb"
OWNER = "neondb_owner"
SUPERUSER = "cloud_admin"
HOST = "127.0.0.1"


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

    def __repr__(self) -> str:
        return (
            f"StandInState(pooled={HOST}:{self.pooler_port}, direct={HOST}:{self.pg_port}, "
            f"directory={self.directory!r})"
        )

    def _url(
        self, port: int, *, user: str = OWNER, password: str | None = None, db: str = DATABASE
    ) -> str:
        return build_url(
            host=HOST,
            port=port,
            user=user,
            password=password if password is not None else self.password,
            database=db,
            params={"sslmode": "require"},
        )

    @property
    def pooled_url(self) -> str:
        """``DATABASE_URL``: through PgBouncer."""
        return self._url(self.pooler_port)

    @property
    def direct_url(self) -> str:
        """``DATABASE_URL_UNPOOLED``: straight to PostgreSQL."""
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
        return {"DATABASE_URL": self.pooled_url, "DATABASE_URL_UNPOOLED": self.direct_url}

    def export_lines(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())

    def describe(self) -> str:
        """A human summary with the passwords masked."""
        return (
            f"pooled (PgBouncer {self.pgbouncer_version}, transaction mode, pool {self.pool_size}): "
            f"{mask_url(self.pooled_url)}\n"
            f"direct (PostgreSQL {self.pg_version}, max_connections {self.max_connections}): "
            f"{mask_url(self.direct_url)}\n"
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
        start_timeout: float = 30.0,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        if max_connections < pool_size + 5:
            raise ValueError("max_connections must be at least pool_size + 5")
        self.directory = Path(directory).absolute()
        self.pool_size = pool_size
        self.max_connections = max_connections
        self.pg_port = pg_port
        self.pooler_port = pooler_port
        self.start_timeout = start_timeout

    def __repr__(self) -> str:
        return f"LocalNeon({str(self.directory)!r})"

    # -- public API -------------------------------------------------------------------

    def state(self) -> StandInState | None:
        """The saved state, or ``None`` when nothing was started here."""
        path = self.directory / STATE_FILE
        try:
            return StandInState(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {
                "running": False,
                "postgres": False,
                "pgbouncer": False,
                "directory": str(self.directory),
            }
        pg = _alive(_postgres_pid(state)) and _port_open(state.pg_port)
        bouncer = _alive(_pgbouncer_pid(state)) and _port_open(state.pooler_port)
        return {
            "running": pg and bouncer,
            "postgres": pg,
            "pgbouncer": bouncer,
            "directory": str(self.directory),
            "pooled": mask_url(state.pooled_url),
            "direct": mask_url(state.direct_url),
        }

    def up(self) -> StandInState:
        """Start the pair, or return the running one. A folder left by a killed run is cleared."""
        state = self.state()
        if state is not None:
            if self.status()["running"]:
                return state
            self._stop(state)
        if self.directory.exists():
            self._remove(self.state())
        binaries = find_binaries()
        run_as = _unprivileged_user()
        pg_port = self._port(self.pg_port, "--pg-port")
        pooler_port = self._port(self.pooler_port, "--pooler-port", avoid=pg_port)
        self.directory.mkdir(parents=True, mode=0o700)
        try:
            runtime = self._runtime_dir(run_as)
            state = StandInState(
                directory=str(self.directory),
                runtime_dir=str(runtime),
                pg_port=pg_port,
                pooler_port=pooler_port,
                password=_password(),
                superuser_password=_password(),
                pool_size=self.pool_size,
                max_connections=self.max_connections,
                run_as=run_as,
                pg_version=_version(binaries.postgres),
                pgbouncer_version=_version(binaries.pgbouncer),
            )
            _write(self.directory / STATE_FILE, json.dumps(asdict(state), indent=2), mode=0o600)
            self._make_certificate(binaries, state)
            self._start_postgres(binaries, state)
            self._create_database(state)
            self._start_pgbouncer(binaries, state)
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

    def _port(self, wanted: int | None, option: str, avoid: int | None = None) -> int:
        if wanted is None:
            while True:
                port = _free_port()
                if port != avoid:
                    return port
        if not _port_free(wanted):
            raise StandInError(f"port {wanted} on {HOST} is busy; choose another with {option}")
        return wanted

    def _runtime_dir(self, run_as: str | None) -> Path:
        """Where the servers keep their files: the state folder, unless its user cannot reach it."""
        if run_as is None:
            return self.directory
        _chown(self.directory, run_as)
        probe = subprocess.run(["test", "-w", str(self.directory)], **_as_user(run_as), check=False)
        if probe.returncode == 0:
            return self.directory
        # e.g. a checkout under /root: keep the servers' files where that user can go.
        runtime = Path(tempfile.mkdtemp(prefix="neon-local-"))
        _chown(runtime, run_as)
        return runtime

    def _make_certificate(self, binaries: Binaries, state: StandInState) -> None:
        runtime = Path(state.runtime_dir)
        _run(
            [
                str(binaries.openssl), "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
                "-subj", "/CN=localhost",
                "-addext", f"subjectAltName=IP:{HOST},DNS:localhost",
                "-keyout", str(runtime / "server.key"), "-out", str(runtime / "server.crt"),
            ],
            what="openssl (making the TLS certificate)",
        )  # fmt: skip
        os.chmod(runtime / "server.key", 0o600)
        for name in ("server.key", "server.crt"):
            _chown(runtime / name, state.run_as)

    def _start_postgres(self, binaries: Binaries, state: StandInState) -> None:
        runtime = Path(state.runtime_dir)
        data = runtime / "data"
        pwfile = runtime / "superuser.pw"
        _write(pwfile, state.superuser_password + "\n", mode=0o600, owner=state.run_as)
        try:
            _run(
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
        conf = {
            "listen_addresses": f"'{HOST}'",
            "port": str(state.pg_port),
            "unix_socket_directories": "''",
            "max_connections": str(state.max_connections),
            "ssl": "on",
            "ssl_cert_file": f"'{runtime / 'server.crt'}'",
            "ssl_key_file": f"'{runtime / 'server.key'}'",
            "password_encryption": "'scram-sha-256'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        with open(data / "postgresql.conf", "a") as f:
            f.write("\n# neon-connect local stand-in\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        (data / "pg_hba.conf").write_text(
            "# TLS + SCRAM only, like Neon\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
        )
        log = runtime / "postgres.log"
        result = _run(
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
            raise StandInError(f"PostgreSQL did not start on port {state.pg_port}{_tail(log)}")

    def _create_database(self, state: StandInState) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(state.superuser_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                    sql.Identifier(OWNER), sql.Literal(state.password)
                )
            )
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(OWNER)
                )
            )

    def _start_pgbouncer(self, binaries: Binaries, state: StandInState) -> None:
        runtime = Path(state.runtime_dir)
        users = runtime / "userlist.txt"
        _write(users, f'"{OWNER}" "{state.password}"\n', mode=0o600, owner=state.run_as)
        ini = runtime / "pgbouncer.ini"
        log = runtime / "pgbouncer.log"
        _write(
            ini,
            "[databases]\n"
            f"* = host={HOST} port={state.pg_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {HOST}\n"
            f"listen_port = {state.pooler_port}\n"
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {users}\n"
            "pool_mode = transaction\n"
            "max_client_conn = 10000\n"
            f"default_pool_size = {state.pool_size}\n"
            "reserve_pool_size = 0\n"
            f"admin_users = {OWNER}\n"
            f"stats_users = {OWNER}\n"
            "client_tls_sslmode = require\n"
            f"client_tls_key_file = {runtime / 'server.key'}\n"
            f"client_tls_cert_file = {runtime / 'server.crt'}\n"
            "server_tls_sslmode = require\n"
            f"logfile = {log}\n"
            f"pidfile = {runtime / 'pgbouncer.pid'}\n",
            mode=0o644,
            owner=state.run_as,
        )
        result = _run(
            [str(binaries.pgbouncer), "-d", str(ini)],
            what="PgBouncer",
            run_as=state.run_as,
            cwd=runtime,
            check=False,
        )
        deadline = time.monotonic() + self.start_timeout
        while result.returncode == 0 and time.monotonic() < deadline:
            if _port_open(state.pooler_port) and _alive(_pgbouncer_pid(state)):
                return
            time.sleep(0.05)
        detail = result.stderr.strip().splitlines()[-1:] if result.stderr else []
        raise StandInError(
            f"PgBouncer did not start on port {state.pooler_port}"
            f"{': ' + detail[0] if detail else ''}{_tail(log)}"
        )

    def _stop(self, state: StandInState) -> None:
        bouncer = _pgbouncer_pid(state)
        if _alive(bouncer):
            _terminate(bouncer)
        pg = _postgres_pid(state)
        if pg is not None and _alive(pg):
            with contextlib.suppress(OSError):
                os.kill(pg, signal.SIGINT)  # fast shutdown: disconnect clients, then stop
            if not _wait_dead(pg, 15):
                _terminate(pg)

    def _remove(self, state: StandInState | None) -> None:
        if state is not None and state.runtime_dir != str(self.directory):
            shutil.rmtree(state.runtime_dir, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


# -- helpers ------------------------------------------------------------------------------


def _password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "npg_" + "".join(secrets.choice(alphabet) for _ in range(16))


def _unprivileged_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise StandInError(
        "running as root but there is no 'postgres' or 'nobody' user to run the servers"
    )


def _as_user(run_as: str | None) -> dict[str, Any]:
    if run_as is None:
        return {}
    entry = pwd.getpwnam(run_as)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _chown(path: Path, run_as: str | None) -> None:
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _write(path: Path, text: str, *, mode: int, owner: str | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    _chown(path, owner)


def _raise_fd_limit() -> None:

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 20000 if hard == resource.RLIM_INFINITY else min(hard, 20000)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _run(
    cmd: Sequence[str],
    *,
    what: str,
    run_as: str | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    _raise_fd_limit()  # inherited by PgBouncer, which wants a descriptor per client
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,  # keep the servers out of the terminal's signals
            timeout=120,
            **_as_user(run_as),
        )
    except FileNotFoundError:
        raise StandInError(f"{what}: {cmd[0]} not found") from None
    if check and result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise StandInError(f"{what} failed: {' | '.join(lines) or f'exit {result.returncode}'}")
    return result


def _version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False
    ).stdout
    words = out.splitlines()[0].split() if out else []
    return next((w for w in words if w[:1].isdigit()), "unknown")


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " (log: " + " | ".join(line.strip() for line in text) + ")" if text else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postgres_pid(state: StandInState) -> int | None:
    return _read_pid(Path(state.runtime_dir) / "data" / "postmaster.pid")


def _pgbouncer_pid(state: StandInState) -> int | None:
    return _read_pid(Path(state.runtime_dir) / "pgbouncer.pid")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a child of ours that exited) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _terminate(pid: int | None) -> None:
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        if _wait_dead(pid, wait):
            return


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
