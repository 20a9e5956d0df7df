"""Writer clients and the write ledger.

Every client writes uniquely keyed rows, one transaction each, through a neon_sqlalchemy
engine, and records what happened to each key:

- ``acked``: ``COMMIT`` returned; the row must be stored exactly once;
- ``failed``: an error before ``COMMIT`` was sent, or neon-connect's ``CommitNotSent`` (the
  connection was found lost before it was sent); the row must not be stored;
- ``unknown``: ``COMMIT`` was sent and no answer came back (the outcome is ambiguous); the
  row may or may not be stored, but at most once.

The ledger table has no unique constraint on the key, so a statement sent twice would show
up as a doubled key. Connect errors (the only step that is retried) are counted apart from
errors inside a transaction. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import http.client
import json
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from neon_connect import CommitNotSent, Endpoint, RetryPolicy

T = TypeVar("T")

INSERT = text("INSERT INTO ledger (run, key, client) VALUES (:run, :key, :client)")
SLEEP = text("SELECT pg_sleep(:seconds)")
LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS ledger ("
    " id bigserial PRIMARY KEY, run text NOT NULL, key text NOT NULL, client int NOT NULL,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE INDEX IF NOT EXISTS ledger_run_key ON ledger (run, key)",  # not unique, on purpose
)


@dataclass
class Client:
    """What one client saw."""

    number: int
    arrived: float = 0.0
    connects: int = 0  # connect steps (engine.connect())
    attempts: int = 0  # driver connect attempts, retries and mid-transaction reconnects included
    connect_attempts: int = 0  # the part of ``attempts`` made inside connect steps
    reruns: int = 0  # statements the pooler refused unforwarded, sent again
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    connect_errors: list[str] = field(default_factory=list)
    tx_errors: list[str] = field(default_factory=list)
    commit_errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ack_spans: list[tuple[float, float]] = field(default_factory=list)  # (began, acked)
    first_connect_error: BaseException | None = None
    connect_error_seconds: float = 0.0  # the slowest failed connect step
    most_attempts: int = 0  # the most driver attempts one connect step took
    connect_seconds: list[float] = field(default_factory=list)  # successful connect steps
    last_began: float = 0.0  # when the latest write began

    def attempted(self, before: int) -> None:
        """End a connect step: its attempts feed both the mean and the max, so the two cover
        the same steps (a reconnect inside a transaction, made later, is in neither)."""
        step = self.attempts - before
        self.connect_attempts += step
        self.most_attempts = max(self.most_attempts, step)

    def connect_failed(self, exc: BaseException, began: float) -> None:
        notes = "\n".join(getattr(getattr(exc, "orig", None) or exc, "__notes__", []))
        retried = re.search(r"\d+ attempts in [\d.]+s", notes)
        where = f" [retry gave up: {retried.group()}]" if retried else " [not retried]"
        self.connect_errors.append(describe(exc) + where)
        self.connect_error_seconds = max(self.connect_error_seconds, time.monotonic() - began)
        if self.first_connect_error is None:
            self.first_connect_error = exc


_client: contextvars.ContextVar[Client | None] = contextvars.ContextVar("client", default=None)


@contextlib.contextmanager
def client_context(client: Client) -> Iterator[None]:
    """Count the connect attempts made inside the block for ``client``."""
    token = _client.set(client)
    try:
        yield
    finally:
        _client.reset(token)


def _count_attempt() -> None:
    client = _client.get()
    if client is not None:
        client.attempts += 1


def _count_rerun() -> None:
    client = _client.get()
    if client is not None:
        client.reruns += 1


@dataclass(frozen=True)
class CountingRetry(RetryPolicy):
    """The library's retry, counting each driver connect attempt for the current client."""

    def call(self, connect: Callable[[], T], *, endpoint: Endpoint) -> T:
        def counted() -> T:
            _count_attempt()
            return connect()

        return super().call(counted, endpoint=endpoint)

    async def acall(self, connect: Callable[[], Awaitable[T]], *, endpoint: Endpoint) -> T:
        def counted() -> Awaitable[T]:
            _count_attempt()
            return connect()

        return await super().acall(counted, endpoint=endpoint)

    def rerun_refused(self, rerun: Callable[[], T], **options: Any) -> T:
        def counted() -> T:
            _count_rerun()
            return rerun()

        return super().rerun_refused(counted, **options)


def describe(exc: BaseException) -> str:
    """``Type: last line of the message``, the driver's error when SQLAlchemy wraps one."""
    inner = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    for line in lines:  # libpq puts the reason after "connection to server ... failed:"
        if "failed:" in line:
            first = line.rsplit("failed:", 1)[1].strip() or first
    return f"{type(inner).__name__}: {first[:140]}"


@dataclass(frozen=True)
class Plan:
    """How a load runs: clients, how many writes each at most, until when, think time."""

    clients: int
    max_writes: int
    seconds: float
    think: float = 0.02
    arrive_within: float = 0.0  # clients start at random times in [0, arrive_within]
    sleep: float = 0.0  # seconds of pg_sleep inside each transaction (a slow transaction)
    hold: bool = False  # one connection per client for the whole run (sync engines only)


def _sync_client(
    engine: Engine, run: str, plan: Plan, client: Client, stop: threading.Event, end: Deadline
) -> None:
    _client.set(client)
    time.sleep(random.uniform(0, plan.arrive_within))
    client.arrived = time.monotonic()
    for i in range(plan.max_writes):
        if stop.is_set() or end.passed(client):
            return
        key = f"{run}:{client.number}:{i}"
        began = client.last_began = time.monotonic()
        client.connects += 1
        before = client.attempts
        try:
            conn = engine.connect()
        except Exception as exc:
            client.connect_failed(exc, began)
            time.sleep(plan.think)
            continue
        finally:
            client.attempted(before)
        try:
            _write(conn, client, run, key, began, sleep=plan.sleep)
        finally:
            with contextlib.suppress(Exception):  # broken: SQLAlchemy already invalidated it
                conn.close()
            time.sleep(plan.think * random.uniform(0.5, 1.5))


def not_sent(exc: BaseException) -> bool:
    """neon-connect's certain outcome: ``COMMIT`` was never sent (``CommitNotSent``, itself
    or as SQLAlchemy's ``orig``), so the row must not be stored; the ledger checks that."""
    return isinstance(exc, CommitNotSent) or isinstance(getattr(exc, "orig", None), CommitNotSent)


def _write(
    conn: Connection, client: Client, run: str, key: str, began: float, *, sleep: float
) -> bool:
    """One ledger write in its own transaction; records where it ended. True when acked."""
    try:
        conn.execute(INSERT, {"run": run, "key": key, "client": client.number})
        if sleep:
            conn.execute(SLEEP, {"seconds": sleep})
    except Exception as exc:
        client.failed.append(key)
        client.tx_errors.append(describe(exc))
        return False
    try:
        conn.commit()
    except Exception as exc:  # the outcome may be unknown: never re-sent
        (client.failed if not_sent(exc) else client.unknown).append(key)
        client.commit_errors.append(describe(exc))
        return False
    done = time.monotonic()
    client.acked.append(key)
    client.latencies.append(done - began)
    client.ack_spans.append((began, done))
    return True


class Deadline:
    """When a client stops starting writes: at the plan's end, but after a fault only once it
    has begun a write since the fault. Otherwise a fault that stalls every client past the end
    (PgBouncer's 15 s ``server_login_retry``) would leave recovery unmeasured, by chance."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.fault_at: float | None = None

    def passed(self, client: Client) -> bool:
        if time.monotonic() <= self.end:
            return False
        return self.fault_at is None or client.last_began >= self.fault_at


class Arrivals:
    """Counts the clients that tried to connect; set once all of them have."""

    def __init__(self, clients: int) -> None:
        self._left = clients
        self._lock = threading.Lock()
        self.all = threading.Event()
        if clients == 0:
            self.all.set()

    def arrived(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self.all.set()


def _holding_client(
    engine: Engine,
    run: str,
    plan: Plan,
    client: Client,
    stop: threading.Event,
    end: Deadline,
    arrivals: Arrivals,
) -> None:
    """A connected client: one connection for the whole run, a transaction per write. It
    stops at its first error (its connection may be gone).

    Deterministic on a slow machine: every connected client writes once, and keeps its
    connection until every client has tried to connect, so the crowd really is one crowd
    however long the connects take (the deadline only bounds the later writes)."""
    _client.set(client)
    time.sleep(random.uniform(0, plan.arrive_within))
    client.arrived = began = time.monotonic()
    client.connects += 1
    try:
        conn = engine.connect()
    except Exception as exc:
        client.connect_failed(exc, began)
        return
    finally:
        client.attempted(0)
        arrivals.arrived()
    client.connect_seconds.append(time.monotonic() - began)
    try:
        for i in range(plan.max_writes):
            if i == 1:
                arrivals.all.wait(timeout=120)
            if i > 0 and (stop.is_set() or end.passed(client)):
                return
            key = f"{run}:{client.number}:{i}"
            began = client.last_began = time.monotonic()
            if not _write(conn, client, run, key, began, sleep=0.0):
                return
            time.sleep(plan.think * random.uniform(0.5, 1.5))
    finally:
        with contextlib.suppress(Exception):
            conn.close()


async def _async_client(
    engine: AsyncEngine, run: str, plan: Plan, client: Client, stop: threading.Event, end: Deadline
) -> None:
    _client.set(client)
    await asyncio.sleep(random.uniform(0, plan.arrive_within))
    client.arrived = time.monotonic()
    for i in range(plan.max_writes):
        if stop.is_set() or end.passed(client):
            return
        key = f"{run}:{client.number}:{i}"
        began = client.last_began = time.monotonic()
        client.connects += 1
        before = client.attempts
        try:
            conn = await engine.connect()
        except Exception as exc:
            client.connect_failed(exc, began)
            await asyncio.sleep(plan.think)
            continue
        finally:
            client.attempted(before)
        try:
            try:
                await conn.execute(INSERT, {"run": run, "key": key, "client": client.number})
                if plan.sleep:
                    await conn.execute(SLEEP, {"seconds": plan.sleep})
            except Exception as exc:
                client.failed.append(key)
                client.tx_errors.append(describe(exc))
                continue
            try:
                await conn.commit()
            except Exception as exc:
                (client.failed if not_sent(exc) else client.unknown).append(key)
                client.commit_errors.append(describe(exc))
                continue
            done = time.monotonic()
            client.acked.append(key)
            client.latencies.append(done - began)
            client.ack_spans.append((began, done))
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
            await asyncio.sleep(plan.think * random.uniform(0.5, 1.5))


@dataclass(frozen=True)
class HttpTarget:
    """An app server on loopback that does the write (see :mod:`resilience.app`)."""

    port: int
    path: str  # /write/sync or /write/async


def _http_client(
    target: HttpTarget, run: str, plan: Plan, client: Client, stop: threading.Event, end: Deadline
) -> None:
    """The same client, through HTTP: the app answers which step failed."""
    time.sleep(random.uniform(0, plan.arrive_within))
    client.arrived = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    try:
        for i in range(plan.max_writes):
            if stop.is_set() or end.passed(client):
                return
            key = f"{run}:{client.number}:{i}"
            began = client.last_began = time.monotonic()
            query = urlencode(
                {"run": run, "key": key, "client": client.number, "sleep": plan.sleep}
            )
            try:
                conn.request("POST", f"{target.path}?{query}")
                answer = json.loads(conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError) as exc:
                client.unknown.append(key)  # the app may have written it
                client.commit_errors.append(f"HTTP: {describe(exc)}")
                conn.close()
                continue
            client.connects += 1
            client.attempts += answer["attempts"]
            client.connect_attempts += answer["attempts"]  # the app's count is per request
            client.most_attempts = max(client.most_attempts, answer["attempts"])
            outcome, error = answer["outcome"], answer.get("error", "")
            if outcome == "acked":
                done = time.monotonic()
                client.acked.append(key)
                client.latencies.append(done - began)
                client.ack_spans.append((began, done))
            elif outcome == "connect":
                client.connect_errors.append(error)
            elif outcome == "tx":
                client.failed.append(key)
                client.tx_errors.append(error)
            else:
                client.unknown.append(key)
                client.commit_errors.append(error)
            time.sleep(plan.think * random.uniform(0.5, 1.5))
    finally:
        conn.close()


class Load:
    """Clients running in the background (threads, or one event loop for async engines)."""

    def __init__(self, engine: Engine | AsyncEngine | HttpTarget, run: str, plan: Plan) -> None:
        self.engine = engine
        self.run = run
        self.plan = plan
        self.clients = [Client(n) for n in range(plan.clients)]
        self.stop = threading.Event()
        self.started = 0.0
        self.deadline = Deadline(0.0)
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        self.started = time.monotonic()
        end = self.deadline = Deadline(self.started + self.plan.seconds)
        if isinstance(self.engine, HttpTarget):
            self._threads = [
                threading.Thread(
                    target=_http_client,
                    args=(self.engine, self.run, self.plan, c, self.stop, end),
                    daemon=True,
                )
                for c in self.clients
            ]
        elif isinstance(self.engine, AsyncEngine):
            engine = self.engine

            async def main() -> None:
                await asyncio.gather(
                    *(
                        _async_client(engine, self.run, self.plan, c, self.stop, end)
                        for c in self.clients
                    )
                )
                await engine.dispose()

            self._threads = [threading.Thread(target=asyncio.run, args=(main(),), daemon=True)]
        elif self.plan.hold:
            arrivals = Arrivals(len(self.clients))
            self._threads = [
                threading.Thread(
                    target=_holding_client,
                    args=(self.engine, self.run, self.plan, c, self.stop, end, arrivals),
                    daemon=True,
                )
                for c in self.clients
            ]
        else:
            self._threads = [
                threading.Thread(
                    target=_sync_client,
                    args=(self.engine, self.run, self.plan, c, self.stop, end),
                    daemon=True,
                )
                for c in self.clients
            ]
        for thread in self._threads:
            thread.start()
        return self

    def fault(self) -> float:
        """Mark the moment a fault is injected; every client writes at least once after it."""
        self.deadline.fault_at = time.monotonic()
        return self.deadline.fault_at

    def wait(self, extra: float = 60.0) -> None:
        """Wait for every client (bounded: the plan's time plus ``extra`` seconds)."""
        deadline = self.started + self.plan.seconds + extra
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.stop.set()
        alive = sum(t.is_alive() for t in self._threads)
        if alive:
            raise RuntimeError(f"{alive} client threads still running after {extra}s")


@dataclass
class Stored:
    """What the ledger holds for one run."""

    counts: Counter[str]

    @classmethod
    def read(cls, direct_url: str, run: str) -> Stored:
        with psycopg.connect(direct_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT key, count(*) FROM ledger WHERE run = %s GROUP BY key", (run,)
            ).fetchall()
        return cls(Counter({key: int(n) for key, n in rows}))


@dataclass
class Figures:
    """The table row of one scenario."""

    scenario: str
    stack: str
    clients: int
    writes: int
    acked: int
    connect_errors: int
    tx_errors: int
    commit_unknown: int
    lost: int
    doubled: int
    phantom: int  # told "failed before COMMIT" but stored
    unknown_stored: int
    attempts_max: int
    attempts_per_connect: float
    p50_ms: float
    p99_ms: float
    recovery_s: float | None
    errors: dict[str, int]
    reruns: int = 0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.lost == 0 and self.doubled == 0 and self.phantom == 0


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def figures(
    load: Load,
    stored: Stored,
    *,
    scenario: str,
    stack: str,
    fault_at: float | None = None,
) -> Figures:
    clients = load.clients
    acked = {k for c in clients for k in c.acked}
    failed = {k for c in clients for k in c.failed}
    unknown = {k for c in clients for k in c.unknown}
    latencies = [x for c in clients for x in c.latencies]
    recovery = None
    if fault_at is not None:
        after = [done for c in clients for began, done in c.ack_spans if began >= fault_at]
        recovery = round(min(after) - fault_at, 3) if after else None
    connects = sum(c.connects for c in clients)
    errors = Counter(
        e for c in clients for e in (*c.connect_errors, *c.tx_errors, *c.commit_errors)
    )
    return Figures(
        scenario=scenario,
        stack=stack,
        clients=len(clients),
        writes=len(acked) + len(failed) + len(unknown),
        acked=len(acked),
        connect_errors=sum(len(c.connect_errors) for c in clients),
        tx_errors=sum(len(c.tx_errors) for c in clients),
        commit_unknown=len(unknown),
        lost=sum(1 for k in acked if stored.counts[k] == 0),
        doubled=sum(1 for n in stored.counts.values() if n > 1),
        phantom=sum(1 for k in failed if stored.counts[k] > 0),
        unknown_stored=sum(1 for k in unknown if stored.counts[k] > 0),
        attempts_max=max((c.most_attempts for c in clients), default=0),
        attempts_per_connect=round(sum(c.connect_attempts for c in clients) / connects, 2)
        if connects
        else 0.0,
        p50_ms=round(_quantile(latencies, 0.5) * 1000, 1),
        p99_ms=round(_quantile(latencies, 0.99) * 1000, 1),
        recovery_s=recovery,
        errors=dict(errors.most_common()),
        reruns=sum(c.reruns for c in clients),
    )


def connect_step_errors(load: Load) -> Iterator[str]:
    for client in load.clients:
        yield from client.connect_errors


def peak_in_flight(load: Load) -> int:
    """The most acknowledged writes that were in flight at the same moment."""
    events = sorted(
        (moment, step)
        for c in load.clients
        for began, done in c.ack_spans
        for moment, step in ((began, 1), (done, -1))
    )
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def first_ack_after(load: Load, moment: float) -> float | None:
    """Seconds from ``moment`` to the first acknowledged write, per the slowest client."""
    firsts = [min(done for _, done in c.ack_spans) for c in load.clients if c.ack_spans]
    if len(firsts) < len(load.clients):
        return None
    return round(max(firsts) - moment, 3)
