"""Workers outside the request cycle (issue 21): task workers, management commands and
long-lived SQLAlchemy processes reuse a kept connection that no request signal ever replaces.

Each worker runs on its own, a fault strikes between two of its ticks, and the row counts
what the worker saw after it. Every worker also runs as teams set it up by hand today (the
control), which must fail as the issue measured: otherwise the row proves nothing.

- ``django-tasks db_worker`` (pooled): django-tasks' database worker, as users run it, in its
  own process (:mod:`resilience.worker_site`). It calls ``close_old_connections()`` once per
  loop, as Celery's fixup does. A tick is a task; each writes a ledger row, so a task lost or
  run twice shows.
- ``Django loop`` (pooled) and ``DirectCommand loop`` (direct): a management command that
  queries every 0.1 s and never calls ``close_old_connections()``.
- ``SQLAlchemy direct engine`` and ``SQLAlchemy allow_client_pool``: a thread in this process
  that checks a connection out of the engine's pool every 0.1 s.

The goals: no error on a pooled connection; at most one clear error per fault for a
``direct()`` session (the server ended it), then recovery.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import psycopg
import sqlalchemy as sa

import neon_sqlalchemy
from neon_local.faults import Faults
from neon_local.standin import StandInState

Fault = Literal["pooler restart", "suspend", "server restart (fast)"]
FAULTS: tuple[Fault, ...] = ("pooler restart", "suspend", "server restart (fast)")
Worker = Literal[
    "django-tasks db_worker",
    "Django loop",
    "DirectCommand loop",
    "SQLAlchemy direct engine",
    "SQLAlchemy allow_client_pool",
]
WORKERS: tuple[Worker, ...] = (
    "django-tasks db_worker",
    "Django loop",
    "DirectCommand loop",
    "SQLAlchemy direct engine",
    "SQLAlchemy allow_client_pool",
)
DIRECT_SESSION: tuple[Worker, ...] = ("DirectCommand loop",)  # may see one error per fault
ENDPOINT: dict[Worker, str] = {
    "django-tasks db_worker": "pooled",
    "Django loop": "pooled",
    "DirectCommand loop": "direct",
    "SQLAlchemy direct engine": "direct",
    "SQLAlchemy allow_client_pool": "pooled",
}
CONTROLS: tuple[tuple[Worker, Fault], ...] = (  # where the issue measured the failure
    ("django-tasks db_worker", "pooler restart"),
    ("Django loop", "pooler restart"),
    ("DirectCommand loop", "suspend"),
    ("SQLAlchemy direct engine", "suspend"),
    ("SQLAlchemy allow_client_pool", "pooler restart"),
)
"""By hand, a pooled connection fails after a pooler restart (PgBouncer hides a suspend or a
server restart from its clients), a direct one after a suspend."""
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = "resilience.worker_site.settings"
SHUTDOWN = "shutting down gracefully"
"""What db_worker logs at SIGTERM (its settings send it to stderr): errors printed after it
come from the stop (see worker_site/settings.py), not from the fault."""
LEDGER_DDL = "CREATE TABLE IF NOT EXISTS worker_ledger (key text NOT NULL)"
BEFORE = 3  # ticks that must pass before the fault strikes


@dataclass
class WorkerFigures:
    """One row: a worker, set up by neon-connect or by hand, across one fault."""

    worker: Worker
    by_hand: bool  # the control
    fault: Fault
    ticks: int  # ticks after the fault (a tick of db_worker is a task)
    errors: int  # errors the worker saw after the fault
    running: bool  # the worker still worked at the end
    tasks_once: str = "-"  # db_worker: tasks done exactly once, of those enqueued after the fault
    first_error: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """What the issue measured without the check: errors after the fault, or a dead worker."""
        return self.errors > 0 or not self.running


def strike(state: StandInState, fault: Fault) -> None:
    """The fault, returning once the stand-in is back (a suspend: once the backends exited)."""
    faults = Faults(state)
    if fault == "pooler restart":
        faults.restart_pooler(down_for=0.3)
    elif fault == "server restart (fast)":
        faults.restart_server(mode="fast", down_for=0.3)
    else:
        faults.suspend()
        with psycopg.connect(state.superuser_url, autocommit=True) as su:
            for _ in range(500):  # up to 10 s: the goodbyes are then on the clients' sockets
                row = su.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = 'neondb'"
                    " AND backend_type = 'client backend'"
                ).fetchone()
                if not row or not row[0]:
                    return
                time.sleep(0.02)
        raise RuntimeError("the terminated backends did not exit within 10 s")


def prepare(state: StandInState) -> None:
    """django-tasks' tables (``migrate``) and the ledger its task writes."""
    _manage(state, "migrate", "-v", "0")
    with psycopg.connect(state.direct_url, autocommit=True) as conn:
        conn.execute(LEDGER_DDL)


def run_all(state: StandInState, *, ticks: int) -> Iterator[WorkerFigures]:
    """Every worker across every fault, then the controls."""
    prepare(state)
    for worker in WORKERS:
        for fault in FAULTS:
            yield run(state, worker, fault, ticks=ticks)
    for worker, fault in CONTROLS:
        yield run(state, worker, fault, ticks=ticks, by_hand=True)


def run(
    state: StandInState, worker: Worker, fault: Fault, *, ticks: int, by_hand: bool = False
) -> WorkerFigures:
    """``worker`` across ``fault``: ``ticks`` ticks after it (bounded to 60 s)."""
    if worker == "django-tasks db_worker":
        figures = _db_worker(state, fault, tasks=ticks, by_hand=by_hand)
    else:
        with _ticker(state, worker, by_hand=by_hand) as ticker:
            figures = _across(ticker, state, worker, fault, ticks=ticks, by_hand=by_hand)
    _judge(figures)
    return figures


def _judge(f: WorkerFigures) -> None:
    if f.by_hand:
        if not f.failed:
            f.problems.append("the control did not fail: this row proves nothing")
        return
    allowed = 1 if f.worker in DIRECT_SESSION and f.fault != "pooler restart" else 0
    if f.errors > allowed:
        f.problems.append(f"{f.errors} errors after the fault (at most {allowed})")
    if not f.running:
        f.problems.append("the worker stopped")
    if (
        f.worker in DIRECT_SESSION
        and f.errors
        and "server ended the direct() session" not in (f.first_error)
    ):
        f.problems.append("the direct() session's end was not named")
    if f.tasks_once not in ("-", f"{f.ticks}/{f.ticks}"):
        f.problems.append(f"tasks done exactly once: {f.tasks_once}")


def _env(state: StandInState, *, by_hand: bool = False, direct: bool = False) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "NEON_WORKER_"))
    }
    env = {**base, **state.env(), "DJANGO_SETTINGS_MODULE": SETTINGS}
    if by_hand:
        env["NEON_WORKER_SETUP"] = "by-hand"
        env["NEON_WORKER_URL"] = "DATABASE_URL_UNPOOLED" if direct else "DATABASE_URL"
    return env


def _django(
    state: StandInState, *args: str, by_hand: bool = False, direct: bool = False
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=_env(state, by_hand=by_hand, direct=direct),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- loops: one line per tick ----------------------------------------------------------------


class Pausable(Protocol):
    def pause(self) -> None: ...

    def resume(self) -> None: ...


class Ticker(Pausable, Protocol):
    lines: queue.Queue[str]

    def running(self) -> bool: ...


@contextlib.contextmanager
def between_ticks(ticker: Pausable, state: StandInState | None = None) -> Iterator[None]:
    """Hold the worker between two of its uses while the fault strikes, as in the issue's
    measurement: its next use comes after the fault. A statement in flight at the very moment
    a server dies is another case (the check's residue; see findings), so the worker is paused
    first and its answers in flight are given time to land.

    A process stopped with ``SIGSTOP`` may stop anywhere, inside a transaction too (django-tasks
    claims each task in one): with ``state``, it is let go and stopped again until no client of
    the stand-in is inside a transaction."""
    for _ in range(100):
        ticker.pause()
        time.sleep(0.2)
        if state is None or not _inside_a_transaction(state):
            break
        ticker.resume()
        time.sleep(random.uniform(0.01, 0.09))
    else:
        ticker.resume()
        raise RuntimeError("the worker was inside a transaction at each of 100 pauses")
    try:
        yield
    finally:
        ticker.resume()


def _inside_a_transaction(state: StandInState) -> bool:
    """Whether a client holds a transaction open: linked to a server at PgBouncer, or a
    direct backend not idle (this check's own runs in database ``postgres``)."""
    with psycopg.connect(state.admin_url, autocommit=True) as admin, admin.cursor() as cur:
        cur.execute("SHOW CLIENTS")
        names = [d.name for d in cur.description or []]
        clients = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    if any(c["database"] == "neondb" and c["link"] for c in clients):
        return True
    with psycopg.connect(state.superuser_url, autocommit=True) as su:
        row = su.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'neondb'"
            " AND backend_type = 'client backend' AND state <> 'idle'"
        ).fetchone()
    return bool(row and row[0])


class _Stoppable:
    """A worker process held with ``SIGSTOP`` and let go with ``SIGCONT``."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


class _Process(_Stoppable):
    """A tick loop in its own process; its stdout lines are the ticks."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        super().__init__(process)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> str:
        """Close stdin (the loop's signal to stop); its stderr."""
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


class _Thread:
    """A tick loop on a SQLAlchemy engine, in a thread of this process."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.lines: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._gate = threading.Lock()  # held for each tick, and by pause()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._gate:
                try:
                    with self.engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    self.lines.put("ok")
                except Exception as error:  # what the worker would see
                    self.lines.put(f"{type(error).__name__}: {error}".splitlines()[0])
            time.sleep(0.1)

    def running(self) -> bool:
        return self._thread.is_alive()

    def pause(self) -> None:
        self._gate.acquire()

    def resume(self) -> None:
        self._gate.release()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.engine.dispose()


@contextlib.contextmanager
def _ticker(state: StandInState, worker: Worker, *, by_hand: bool) -> Iterator[Ticker]:
    if worker in ("Django loop", "DirectCommand loop"):
        direct = worker == "DirectCommand loop"
        command = "direct_tick_loop" if direct else "tick_loop"
        process = _Process(_django(state, command, by_hand=by_hand, direct=direct))
        try:
            yield process
        finally:
            process.stop()
        return
    thread = _Thread(_engine(state, worker, by_hand=by_hand))
    try:
        yield thread
    finally:
        thread.stop()


def _engine(state: StandInState, worker: Worker, *, by_hand: bool) -> sa.Engine:
    direct = worker == "SQLAlchemy direct engine"
    if by_hand:  # a pool of kept connections, no pre-ping: SQLAlchemy's default
        url = state.direct_url if direct else state.pooled_url
        return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    if direct:
        return neon_sqlalchemy.create_engine(env=state.env(), direct=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", neon_sqlalchemy.NeonClientPoolWarning)
        return neon_sqlalchemy.create_engine(env=state.env(), allow_client_pool=True)


def _across(
    ticker: Ticker,
    state: StandInState,
    worker: Worker,
    fault: Fault,
    *,
    ticks: int,
    by_hand: bool,
) -> WorkerFigures:
    before = _take(ticker, BEFORE)
    if before != ["ok"] * BEFORE:
        raise RuntimeError(f"{worker} did not work before the fault: {before}")
    with between_ticks(ticker, state if isinstance(ticker, _Process) else None):
        strike(state, fault)
    after = _take(ticker, ticks)
    errors = [line for line in after if line != "ok"]
    return WorkerFigures(
        worker=worker,
        by_hand=by_hand,
        fault=fault,
        ticks=len(after),
        errors=len(errors),
        running=len(after) == ticks and after[-1] == "ok",
        first_error=errors[0] if errors else "",
    )


def _take(ticker: Ticker, n: int, seconds: float = 60) -> list[str]:
    """The next ``n`` ticks (fewer if the worker stops or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    lines: list[str] = []
    while len(lines) < n and time.monotonic() < deadline:
        try:
            lines.append(ticker.lines.get(timeout=0.5))
        except queue.Empty:
            if not ticker.running():
                break
    return lines


# -- django-tasks' db_worker: a tick is a task -----------------------------------------------


def _db_worker(state: StandInState, fault: Fault, *, tasks: int, by_hand: bool) -> WorkerFigures:
    prefix = f"{fault.split()[0]}-{'hand' if by_hand else 'neon'}-{random.randrange(10**9)}:"
    first = [f"{prefix}a{i}" for i in range(BEFORE)]
    second = [f"{prefix}b{i}" for i in range(tasks)]
    worker = _django(state, "db_worker", "--interval", "0.1", "--no-startup-delay", by_hand=by_hand)
    try:
        _enqueue(state, first)
        if not _until(lambda: len(_ledger(state, prefix)) == BEFORE, worker):
            raise RuntimeError(f"db_worker did not work before the fault: {_ledger(state, prefix)}")
        with between_ticks(_Stoppable(worker), state):
            strike(state, fault)
        _enqueue(state, second)
        _until(lambda: len(_ledger(state, prefix)) == BEFORE + tasks, worker)
        running = worker.poll() is None
    finally:
        worker.terminate()  # db_worker stops gracefully on SIGTERM
        _, err = worker.communicate(timeout=30)
    ledger = _ledger(state, prefix)
    once = sum(1 for key in second if ledger.get(key) == 1)
    err = err.partition(SHUTDOWN)[0]  # what the stop itself causes is not counted
    errors = err.count("Traceback (most recent call last)")
    last = [line for line in err.splitlines() if "Error" in line]
    return WorkerFigures(
        worker="django-tasks db_worker",
        by_hand=by_hand,
        fault=fault,
        ticks=tasks,
        errors=errors,
        running=running,
        tasks_once=f"{once}/{tasks}",
        first_error=last[-1].strip() if errors and last else "",
    )


def _enqueue(state: StandInState, keys: list[str]) -> None:
    _manage(state, "enqueue", *keys)


def _manage(state: StandInState, *args: str) -> None:
    """A management command of the worker site, run to its end; its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=_env(state),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(f"manage.py {args[0]} for the worker site failed: {done.stderr}")


def _ledger(state: StandInState, prefix: str) -> dict[str, int]:
    with psycopg.connect(state.direct_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT key, count(*) FROM worker_ledger WHERE key LIKE %s GROUP BY key",
            (prefix + "%",),
        ).fetchall()
    return {key: int(n) for key, n in rows}


def _until(done: Callable[[], bool], worker: subprocess.Popen[str], seconds: float = 60) -> bool:
    """Poll ``done`` until it holds, the worker exits, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and worker.poll() is None:
        if done():
            return True
        time.sleep(0.1)
    return done()
