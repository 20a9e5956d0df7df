"""Streaming read replicas of the stand-in: a hot standby PostgreSQL, each with its own PgBouncer.

Like a Neon read replica, each has its own endpoints (here: ports) and lags the primary by a
small amount. ``pg_basebackup -R`` copies the primary over a TLS replication connection as
the stand-in's superuser and writes ``primary_conninfo``; the copy starts as a hot standby.
Each replica lives in ``<runtime>/replica-<n>`` (so removing the stand-in's folders removes it)
and is listed in ``<state folder>/replicas.json``, which ``down`` reads to stop it.

Artificial lag for tests: :meth:`Replica.pause_replay` (``pg_wal_replay_pause()``) keeps the
replica at its current data until :meth:`Replica.resume_replay`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neon_connect._urls import build_url, mask_url

from . import processes as proc
from .binaries import find_binaries
from .configs import DATABASE, OWNER, SUPERUSER, pgbouncer_ini
from .errors import StandInError
from .processes import HOST

if TYPE_CHECKING:
    import psycopg

    from .standin import StandInState

__all__ = [
    "REPLICA_VAR",
    "Replica",
    "load_replicas",
    "replica_export_lines",
    "start_replicas",
    "stop_replicas",
]

REPLICA_VAR = "DATABASE_URL_REPLICA"
"""The variable the replicas' pooled URLs are exported in, comma-separated."""
REPLICAS_FILE = "replicas.json"
_USERS = "userlist.txt"


@dataclass(frozen=True)
class Replica:
    """One running replica: a hot standby PostgreSQL and its PgBouncer."""

    index: int
    runtime_dir: str
    pg_port: int
    pooler_port: int
    password: str
    superuser_password: str
    pool_size: int
    prepared_statements: int
    pgbouncer: str
    pg_bindir: str
    run_as: str | None

    def __repr__(self) -> str:
        return (
            f"Replica({self.index}, pooled={HOST}:{self.pooler_port}, direct={HOST}:{self.pg_port})"
        )

    def _url(self, port: int, *, user: str, password: str, db: str) -> str:
        params = {"sslmode": "require"}
        return build_url(
            host=HOST, port=port, user=user, password=password, database=db, params=params
        )

    @property
    def pooled_url(self) -> str:
        """This replica's pooled endpoint (its PgBouncer), as ``DATABASE_URL_REPLICA`` holds it."""
        return self._url(self.pooler_port, user=OWNER, password=self.password, db=DATABASE)

    @property
    def direct_url(self) -> str:
        return self._url(self.pg_port, user=OWNER, password=self.password, db=DATABASE)

    @property
    def superuser_url(self) -> str:
        return self._url(
            self.pg_port, user=SUPERUSER, password=self.superuser_password, db="postgres"
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.runtime_dir) / "data"

    def describe(self) -> str:
        return f"replica {self.index} (hot standby, own PgBouncer): {mask_url(self.pooled_url)}\n"

    # -- lag ---------------------------------------------------------------------------

    def superuser(self) -> psycopg.Connection[Any]:
        """An autocommit superuser connection to the replica's PostgreSQL."""
        import psycopg

        return psycopg.connect(self.superuser_url, autocommit=True, connect_timeout=10)

    def pause_replay(self) -> None:
        """Stop applying WAL: the replica serves the data it has until :meth:`resume_replay`."""
        with self.superuser() as su:
            su.execute("SELECT pg_wal_replay_pause()")
            # pausing is asynchronous: wait until the startup process has really stopped
            _wait(lambda: _fetch(su, "SELECT pg_get_wal_replay_pause_state()") == "paused", 10)

    def resume_replay(self) -> None:
        with self.superuser() as su:
            su.execute("SELECT pg_wal_replay_resume()")

    @contextlib.contextmanager
    def lagging(self) -> Iterator[None]:
        """A block during which the replica applies no WAL (artificial lag), resumed on exit."""
        self.pause_replay()
        try:
            yield
        finally:
            self.resume_replay()

    def catch_up(self, primary_superuser_url: str, timeout: float = 30.0) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        import psycopg

        with psycopg.connect(primary_superuser_url, autocommit=True, connect_timeout=10) as pri:
            target = _fetch(pri, "SELECT pg_current_wal_insert_lsn()::text")
        with self.superuser() as su:
            query = f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"
            if not _wait(lambda: bool(_fetch(su, query)), timeout):
                raise StandInError(f"replica {self.index} did not catch up within {timeout:.0f} s")

    # -- processes ---------------------------------------------------------------------

    def running(self) -> bool:
        pg = proc.alive(proc.read_pid(self.data_dir / "postmaster.pid"))
        bouncer = proc.alive(proc.read_pid(Path(self.runtime_dir) / "pgbouncer.pid"))
        return pg and bouncer and proc.port_open(self.pg_port) and proc.port_open(self.pooler_port)

    def start(self, timeout: float = 30.0) -> None:
        """Start (or restart after :meth:`stop`) the standby and its PgBouncer."""
        runtime = Path(self.runtime_dir)
        log = runtime / "postgres.log"
        result = proc.run(
            [str(Path(self.pg_bindir) / "pg_ctl"), "-D", str(self.data_dir), "-l", str(log), "-w",
             "-t", str(int(timeout)), "start"],
            what=f"replica {self.index} PostgreSQL",
            run_as=self.run_as,
            cwd=runtime,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StandInError(
                f"replica {self.index} did not start on port {self.pg_port}{proc.tail(log)}"
            )
        proc.run(
            [self.pgbouncer, "-d", str(runtime / "pgbouncer.ini")],
            what=f"replica {self.index} PgBouncer",
            run_as=self.run_as,
            cwd=runtime,
        )
        if not _wait(lambda: proc.port_open(self.pooler_port), timeout):
            raise StandInError(
                f"replica {self.index} PgBouncer did not start on port {self.pooler_port}"
                f"{proc.tail(runtime / 'pgbouncer.log')}"
            )

    def stop(self) -> None:
        """Stop the PgBouncer and the standby (the data folder stays, for :meth:`start`)."""
        proc.terminate(proc.read_pid(Path(self.runtime_dir) / "pgbouncer.pid"))
        pg = proc.read_pid(self.data_dir / "postmaster.pid")
        if pg is not None and proc.alive(pg):
            with contextlib.suppress(OSError):
                os.kill(pg, signal.SIGINT)  # fast shutdown
            if not proc.wait_dead(pg, 15):
                proc.terminate(pg)


def _fetch(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def start_replicas(state: StandInState, count: int, *, timeout: float = 60.0) -> list[Replica]:
    """Start ``count`` more replicas of the running stand-in and record them in its folder."""
    if count < 0:
        raise ValueError("the number of replicas must be >= 0")
    existing = load_replicas(state)
    started = list(existing)
    for index in range(len(existing) + 1, len(existing) + count + 1):
        replica = _create(state, index, timeout=timeout)
        started.append(replica)
        _save(state, started)
    return started


def load_replicas(state: StandInState) -> list[Replica]:
    """The replicas recorded for this stand-in (running or not)."""
    try:
        rows = json.loads((Path(state.directory) / REPLICAS_FILE).read_text())
        return [Replica(**row) for row in rows]
    except (OSError, ValueError, TypeError):
        return []


def stop_replicas(state: StandInState) -> None:
    """Stop every recorded replica (the stand-in's ``down`` removes their folders)."""
    for replica in load_replicas(state):
        replica.stop()


def replica_export_lines(replicas: list[Replica]) -> str:
    """``export DATABASE_URL_REPLICA=...`` (comma-separated), or nothing without replicas."""
    if not replicas:
        return ""
    urls = ",".join(r.pooled_url for r in replicas)
    return f"export {REPLICA_VAR}={shlex.quote(urls)}\n"


def _save(state: StandInState, replicas: list[Replica]) -> None:
    text = json.dumps([asdict(r) for r in replicas], indent=2)
    proc.write_file(Path(state.directory) / REPLICAS_FILE, text, mode=0o600)


def _create(state: StandInState, index: int, *, timeout: float) -> Replica:
    binaries = find_binaries(pgbouncer=state.pgbouncer)
    runtime = Path(state.runtime_dir) / f"replica-{index}"
    runtime.mkdir(mode=0o700)
    proc.chown(runtime, state.run_as)
    pg_port = proc.free_port()
    pooler_port = next(p for p in iter(proc.free_port, None) if p != pg_port)
    replica = Replica(
        index=index,
        runtime_dir=str(runtime),
        pg_port=pg_port,
        pooler_port=pooler_port,
        password=state.password,
        superuser_password=state.superuser_password,
        pool_size=state.pool_size,
        prepared_statements=state.max_prepared_statements,
        pgbouncer=state.pgbouncer,
        pg_bindir=str(binaries.pg_bindir),
        run_as=state.run_as,
    )
    # The walreceiver reads the password from this file for as long as the replica runs.
    passfile = runtime / "primary.pgpass"
    line = f"{HOST}:{state.pg_port}:*:{SUPERUSER}:{state.superuser_password}\n"
    proc.write_file(passfile, line, mode=0o600, owner=state.run_as)
    conninfo = (
        f"host={HOST} port={state.pg_port} user={SUPERUSER} sslmode=require "
        f"passfile={passfile} application_name=replica_{index} "
        # no client certificate: libpq would otherwise look in $HOME (root's, when run by root)
        f"sslcert={runtime / 'none.crt'} sslkey={runtime / 'none.key'} "
        f"sslrootcert={runtime / 'none.crt'}"
    )
    proc.run(
        [str(binaries.pg_bindir / "pg_basebackup"), "-D", str(replica.data_dir), "-R",
         "-X", "stream", "-c", "fast", "-d", conninfo],
        what=f"pg_basebackup (replica {index})",
        run_as=state.run_as,
        cwd=runtime,
    )  # fmt: skip
    with open(replica.data_dir / "postgresql.conf", "a") as f:
        f.write(
            f"\n# replica {index} of the neon-connect stand-in\nport = {pg_port}\nhot_standby = on\n"
        )
    for name in ("server.key", "server.crt"):  # PgBouncer's TLS files, next to its ini
        source = Path(state.runtime_dir) / name
        proc.write_file(runtime / name, source.read_text(), mode=0o600, owner=state.run_as)
    proc.write_file(
        runtime / _USERS, f'"{OWNER}" "{state.password}"\n', mode=0o600, owner=state.run_as
    )
    ini = pgbouncer_ini(
        runtime=runtime,
        pg_port=pg_port,
        listen_port=pooler_port,
        owner=OWNER,
        pool_size=state.pool_size,
        prepared_statements=state.max_prepared_statements,
    )
    proc.write_file(runtime / "pgbouncer.ini", ini, mode=0o644, owner=state.run_as)
    try:
        replica.start(timeout=timeout)
    except BaseException:
        replica.stop()
        raise
    return replica
