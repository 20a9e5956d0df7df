"""Faults on the local stand-in: what a Neon compute and its pooler do to clients, on demand.

Each method acts on a running stand-in (its saved :class:`StandInState`) and returns when the
fault is over, so a test starts its load, injects the fault from another thread, and then
checks what the callers saw:

- :meth:`Faults.cold_start`: the pooler holds every query (``PAUSE``/``RESUME``), or
  PostgreSQL is stopped and started, for a given time;
- :meth:`Faults.suspend`: every backend is terminated, idle or inside a transaction;
- :meth:`Faults.restart_pooler`: PgBouncer dies (``SIGKILL``) or shuts down, then starts again;
- :meth:`Faults.restart_server`: PostgreSQL restarts in ``fast`` or ``immediate`` mode;
- :meth:`Faults.exhausted_pool`: a small ``default_pool_size`` and a short ``query_wait_timeout``;
- :meth:`Faults.full_direct_endpoint`: every ``max_connections`` slot of PostgreSQL is held.

They are reachable from the ``neon_local`` pytest fixture (``neon_local.faults``) and from
``neon-local fault ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import processes as proc
from .binaries import find_binaries
from .errors import StandInError
from .standin import DATABASE, StandInState, _pgbouncer_pid, _postgres_pid

if TYPE_CHECKING:
    import psycopg

__all__ = ["FAULTS", "Faults"]

ServerStop = Literal["fast", "immediate"]
PoolerStop = Literal["kill", "shutdown"]
FAULTS = (
    "cold-start",
    "suspend",
    "restart-pooler",
    "restart-server",
    "exhaust-pool",
    "fill-direct",
)


class Faults:
    """Inject faults into the stand-in described by ``state``."""

    def __init__(self, state: StandInState, *, timeout: float = 30.0) -> None:
        self.state = state
        self.timeout = timeout
        self._pooler_cmdline: list[str] | None = None

    def __repr__(self) -> str:
        return f"Faults({self.state!r})"

    # -- connections ----------------------------------------------------------------

    def _superuser(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(self.state.superuser_url, autocommit=True, connect_timeout=5)

    def _admin(self) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(self.state.admin_url, autocommit=True, connect_timeout=5)

    # -- cold start -----------------------------------------------------------------

    def cold_start(self, seconds: float, *, how: Literal["pause", "stop"] = "pause") -> None:
        """Make the endpoint unavailable for ``seconds``, then bring it back.

        ``pause``: PgBouncer's ``PAUSE`` holds every new query (connects to the pooler still
        succeed), like Neon's proxy holding a request while the compute wakes. ``stop``:
        PostgreSQL is stopped, so the pooler cannot reach a server and direct connects are
        refused, then started again.
        """
        if how == "pause":
            with self.paused_pooler():
                time.sleep(seconds)
        else:
            self.restart_server(down_for=seconds)

    @contextlib.contextmanager
    def paused_pooler(self, database: str = DATABASE) -> Iterator[None]:
        """PgBouncer ``PAUSE`` on entry (waits for running transactions), ``RESUME`` on exit."""
        with self._admin() as admin:
            admin.execute(f"PAUSE {database}")
            try:
                yield
            finally:
                admin.execute(f"RESUME {database}")

    # -- suspend --------------------------------------------------------------------

    def suspend(self, database: str = DATABASE) -> int:
        """Terminate every client backend of ``database`` (idle or in a transaction).

        Returns how many were terminated. Like a Neon compute suspending under its clients:
        the server connections of the pooler and every direct connection are cut.
        """
        with self._superuser() as su:
            rows = su.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND datname = %s "
                "AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    # -- pooler restart -------------------------------------------------------------

    def stop_pooler(self, *, how: PoolerStop = "kill") -> None:
        """Stop PgBouncer: ``kill`` (``SIGKILL``: it dies under its clients) or ``shutdown``
        (the admin console's ``SHUTDOWN``: it closes every connection and exits)."""
        pid = _pgbouncer_pid(self.state)
        if not proc.alive(pid):
            return
        assert pid is not None
        self._pooler_cmdline = _cmdline(pid) or self._pooler_cmdline
        if how == "kill":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        else:
            with contextlib.suppress(Exception), self._admin() as admin:
                admin.execute("SHUTDOWN")
        if not proc.wait_dead(pid, self.timeout):
            raise StandInError(f"PgBouncer (pid {pid}) did not stop")
        # A killed PgBouncer leaves its pidfile, and refuses to start while the pid in it
        # exists (an unreaped zombie counts).
        (Path(self.state.runtime_dir) / "pgbouncer.pid").unlink(missing_ok=True)

    def start_pooler(self) -> None:
        """Start PgBouncer again with the command line it ran with."""
        if proc.alive(_pgbouncer_pid(self.state)):
            return
        cmd = self._pooler_cmdline or [
            str(find_binaries().pgbouncer),
            "-d",
            str(Path(self.state.runtime_dir) / "pgbouncer.ini"),
        ]
        result = proc.run(cmd, what="PgBouncer", run_as=self.state.run_as, check=False)

        def serving() -> bool:  # PgBouncer may listen before its daemon writes the pidfile
            return proc.port_open(self.state.pooler_port) and proc.alive(_pgbouncer_pid(self.state))

        if not _wait_until(serving, self.timeout):
            raise StandInError(
                f"PgBouncer did not start again on port {self.state.pooler_port}: "
                f"{(result.stderr or '').strip()[-200:]}"
            )

    def restart_pooler(self, *, down_for: float = 0.0, how: PoolerStop = "kill") -> None:
        """Stop PgBouncer, wait ``down_for`` seconds, start it again."""
        self.stop_pooler(how=how)
        time.sleep(down_for)
        self.start_pooler()

    # -- server restart -------------------------------------------------------------

    def stop_server(self, *, mode: ServerStop = "fast") -> None:
        """``pg_ctl stop``: ``fast`` (terminate sessions, checkpoint) or ``immediate``
        (crash-like: no checkpoint, recovery on the next start)."""
        pg = _postgres_pid(self.state)
        if not proc.alive(pg):
            return
        proc.run(
            [str(find_binaries().pg_ctl), "-D", self._data, "-m", mode, "-w", "stop"],
            what="pg_ctl stop",
            run_as=self.state.run_as,
        )

    def start_server(self) -> None:
        """``pg_ctl start``, waiting until PostgreSQL accepts connections."""
        if proc.alive(_postgres_pid(self.state)):
            return
        log = Path(self.state.runtime_dir) / "postgres.log"
        cmd = [str(find_binaries().pg_ctl), "-D", self._data, "-l", str(log), "-w"]
        proc.run(
            [*cmd, "-t", str(int(self.timeout)), "start"],
            what="pg_ctl start",
            run_as=self.state.run_as,
            cwd=Path(self.state.runtime_dir),
        )

    def restart_server(self, *, mode: ServerStop = "fast", down_for: float = 0.0) -> None:
        """Stop PostgreSQL (``mode``), wait ``down_for`` seconds, start it again."""
        self.stop_server(mode=mode)
        time.sleep(down_for)
        self.start_server()

    @property
    def _data(self) -> str:
        return str(Path(self.state.runtime_dir) / "data")

    # -- pool exhaustion ------------------------------------------------------------

    @contextlib.contextmanager
    def exhausted_pool(self, *, pool_size: int = 1, query_wait_timeout: int = 1) -> Iterator[None]:
        """Shrink PgBouncer's ``default_pool_size`` and ``query_wait_timeout`` (seconds) at
        runtime, so a burst of clients waits and the late ones get ``query_wait_timeout``;
        the previous values come back on exit."""
        if pool_size < 1 or query_wait_timeout < 1:
            raise ValueError("pool_size and query_wait_timeout must be >= 1")
        with self._admin() as admin:
            before = {
                row[0]: row[1]
                for row in admin.execute("SHOW CONFIG").fetchall()
                if row[0] in ("default_pool_size", "query_wait_timeout")
            }
            admin.execute(f"SET default_pool_size = {int(pool_size)}")
            admin.execute(f"SET query_wait_timeout = {int(query_wait_timeout)}")
            admin.execute("RECONNECT")  # idle server connections above the new size go
            try:
                yield
            finally:
                for key, value in before.items():
                    admin.execute(f"SET {key} = {int(value)}")

    # -- a full direct endpoint -----------------------------------------------------

    @contextlib.contextmanager
    def full_direct_endpoint(self) -> Iterator[int]:
        """Hold every connection slot PostgreSQL gives ordinary roles; yields how many.

        While held, a direct connect fails with ``sorry, too many clients already`` (or
        ``remaining connection slots are reserved``), and the pooler cannot open new server
        connections either, as on a compute whose ``max_connections`` is used up.
        """
        import psycopg

        held: list[psycopg.Connection[Any]] = []
        try:
            for _ in range(self.state.max_connections):
                try:
                    held.append(
                        psycopg.connect(self.state.direct_url, autocommit=True, connect_timeout=5)
                    )
                except psycopg.OperationalError as exc:
                    if any(text in str(exc) for text in _FULL):
                        break
                    raise
            yield len(held)
        finally:
            for conn in held:
                with contextlib.suppress(Exception):
                    conn.close()


# -- helpers ------------------------------------------------------------------------------

_FULL = ("too many clients", "connection slots are reserved")  # PostgreSQL's 53300 texts


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    parts = [p.decode() for p in raw.split(b"\0") if p]
    return parts or None


def _wait_until(ready: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.02)
    return bool(ready())


# -- command line -------------------------------------------------------------------------


def add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``neon-local fault``."""
    parser.add_argument("fault", choices=FAULTS, help="which fault to inject")
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="how long the fault lasts (cold-start, restarts, exhaust-pool, fill-direct)",
    )
    parser.add_argument(
        "--mode",
        choices=("pause", "stop", "fast", "immediate", "kill", "shutdown"),
        help="cold-start: pause|stop; restart-server: fast|immediate; restart-pooler: kill|shutdown",
    )


def run_fault(state: StandInState, args: argparse.Namespace) -> str:
    """Run the fault named on the command line; returns a one-line summary."""
    faults = Faults(state)
    seconds = max(0.0, float(args.seconds))
    mode = args.mode
    if args.fault == "cold-start":
        faults.cold_start(seconds, how="stop" if mode == "stop" else "pause")
        return f"cold start ({mode or 'pause'}) for {seconds:g}s done"
    if args.fault == "suspend":
        return f"suspended: terminated {faults.suspend()} backends"
    if args.fault == "restart-pooler":
        faults.restart_pooler(down_for=seconds, how="shutdown" if mode == "shutdown" else "kill")
        return f"PgBouncer restarted ({mode or 'kill'}, down {seconds:g}s)"
    if args.fault == "restart-server":
        faults.restart_server(mode="immediate" if mode == "immediate" else "fast", down_for=seconds)
        return f"PostgreSQL restarted ({mode or 'fast'}, down {seconds:g}s)"
    if args.fault == "exhaust-pool":
        with faults.exhausted_pool():
            print("pool_size 1, query_wait_timeout 1s for", f"{seconds:g}s", file=sys.stderr)
            time.sleep(seconds)
        return "pool settings restored"
    with faults.full_direct_endpoint() as held:
        print(f"holding {held} direct connections for {seconds:g}s", file=sys.stderr)
        time.sleep(seconds)
    return f"released {held} direct connections"
