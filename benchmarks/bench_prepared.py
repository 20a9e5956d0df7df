"""Prepared statements through the pooler: round trips and time per query, on and off.

    .venv/bin/python benchmarks/bench_prepared.py [--query join|lookup] [--queries 150]
        [--rounds 15] [--rtt-ms 1] [--pgbouncer PATH]

Runs on the local stand-in with PgBouncer >= 1.22 and Neon's ``max_prepared_statements=1000``
(unless ``--pgbouncer`` picks another), for psycopg, asyncpg and Django, each with prepares
off (what neon-connect does on a pooled endpoint today) and on:

- **round trips per query**: counted by a TCP proxy between the client and PgBouncer that
  counts each time the client speaks again after the server answered;
- **time per query**: one kept connection, the same parametrised query with changing
  parameters (``join``: planning dominates; ``lookup``: little to plan), straight to PgBouncer (no proxy); medians of per-round means, scenarios
  interleaved round by round so a noisy neighbour slows them all alike;
- **at Neon's distance**: time per query + round trips x ``--rtt-ms`` (the client-to-pooler
  round trip, 1 ms by default: an app in the same region).

Nothing here asserts a time: the numbers are for reading (and for the README's table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable

import asyncpg
import psycopg

from neon_connect import asyncpg_params, psycopg_params, resolve
from neon_local import running
from neon_local.standin import StandInState

QUERIES = {
    # planning dominates: three catalog tables joined, grouped, sorted
    "join": (
        "SELECT c.relname, n.nspname, count(a.attname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relname LIKE {p1} AND a.attnum > {p2} GROUP BY 1, 2 ORDER BY 1 LIMIT 5"
    ),
    # a typical ORM lookup by key: little to plan
    "lookup": "SELECT relname, relpages FROM pg_class WHERE relname LIKE {p1} AND relnatts > {p2}",
}
PSYCOPG_QUERY = ASYNCPG_QUERY = ""  # set by --query


class CountingProxy:
    """127.0.0.1:port -> target; counts client turns (a client send after a server answer)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.turns = 0
        self._last: dict[int, str] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def start() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=self._loop.run_until_complete, args=(start(),), daemon=True).start()
        ready.wait(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        key = id(writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
            try:
                while data := await src.read(65536):
                    with self._lock:
                        if side == "client" and self._last.get(key) != "client":
                            self.turns += 1
                        self._last[key] = side
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, "client"), pipe(up_reader, writer, "server"))


def _timed(fn: Callable[[int], object], queries: int) -> float:
    started = time.perf_counter()
    for i in range(queries):
        fn(i)
    return (time.perf_counter() - started) * 1000 / queries


def _turns(proxy: CountingProxy, fn: Callable[[int], object], queries: int) -> float:
    fn(0)  # the first query of a connection may also fetch types; count steady state
    before = proxy.turns
    for i in range(1, queries + 1):
        fn(i)
    return (proxy.turns - before) / queries


class Scenario:
    """One driver setting: ``make(port)`` returns (run one query, close)."""

    def __init__(
        self, name: str, make: Callable[[int], tuple[Callable[[int], object], Callable[[], None]]]
    ) -> None:
        self.name = name
        self.make = make


def _psycopg(state: StandInState, threshold: int | None) -> Scenario:
    params = psycopg_params(resolve(env=state.env()).app, prepared_statements=True)

    def make(port: int) -> tuple[Callable[[int], object], Callable[[], None]]:
        conn = psycopg.connect(
            **{**params, "port": port}, autocommit=True, prepare_threshold=threshold
        )

        def run(i: int) -> object:
            return conn.execute(PSYCOPG_QUERY, ("pg_%", i % 5)).fetchall()

        return run, conn.close

    label = (
        "off (prepare_threshold=None)"
        if threshold is None
        else f"on (prepare_threshold={threshold})"
    )
    return Scenario(f"psycopg {psycopg.__version__}: prepares {label}", make)


def _asyncpg(state: StandInState, cache: int) -> Scenario:
    params = asyncpg_params(resolve(env=state.env()).app)
    loop = asyncio.new_event_loop()

    def make(port: int) -> tuple[Callable[[int], object], Callable[[], None]]:
        conn = loop.run_until_complete(
            asyncpg.connect(**{**params, "port": port, "statement_cache_size": cache})
        )

        def run(i: int) -> object:
            return loop.run_until_complete(conn.fetch(ASYNCPG_QUERY, "pg_%", i % 5))

        return run, lambda: loop.run_until_complete(conn.close())

    label = "off (statement_cache_size=0)" if cache == 0 else f"on (statement_cache_size={cache})"
    return Scenario(f"asyncpg {asyncpg.__version__}: cache {label}", make)


def _django(state: StandInState, prepared: bool, server_side_binding: bool) -> Scenario:
    import neon_django

    def make(port: int) -> tuple[Callable[[int], object], Callable[[], None]]:
        from django.db.backends.postgresql.base import DatabaseWrapper

        env = state.env()
        env["DATABASE_URL"] = env["DATABASE_URL"].replace(f":{state.pooler_port}/", f":{port}/")
        options = {"server_side_binding": True} if server_side_binding else {}
        settings = neon_django.config(env=env, options=options, prepared_statements=prepared)
        settings.setdefault("TIME_ZONE", None)  # what Django's ConnectionHandler would add
        wrapper = DatabaseWrapper({**settings, "AUTOCOMMIT": True}, alias=f"bench{port}")
        wrapper.ensure_connection()

        def run(i: int) -> object:
            with wrapper.cursor() as cur:
                cur.execute(PSYCOPG_QUERY, ("pg_%", i % 5))
                return cur.fetchall()

        return run, wrapper.close

    binding = "server-side binding" if server_side_binding else "client-side binding, default"
    return Scenario(f"Django ({binding}): prepared_statements={prepared}", make)


def _setup_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True, INSTALLED_APPS=[], DATABASES={})
        django.setup()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--rtt-ms", type=float, default=1.0)
    parser.add_argument("--pgbouncer", help="PgBouncer binary (default: the newest >= 1.22)")
    parser.add_argument("--query", choices=sorted(QUERIES), default="join")
    args = parser.parse_args()
    global PSYCOPG_QUERY, ASYNCPG_QUERY
    PSYCOPG_QUERY = QUERIES[args.query].format(p1="%s", p2="%s")
    ASYNCPG_QUERY = QUERIES[args.query].format(p1="$1", p2="$2")
    _setup_django()
    with running(pool_size=5, pgbouncer=args.pgbouncer, proxy=False) as state:
        print(
            f"PgBouncer {state.pgbouncer_version} (max_prepared_statements "
            f"{state.max_prepared_statements}), PostgreSQL {state.pg_version}, "
            f"libpq {psycopg.pq.version()}; query {args.query!r}: "
            f"{args.queries} queries x {args.rounds} rounds",
            file=sys.stderr,
        )
        scenarios = [
            _psycopg(state, None),
            _psycopg(state, 5),
            _psycopg(state, 0),
            _asyncpg(state, 0),
            _asyncpg(state, 100),
            _django(state, False, False),
            _django(state, True, False),
            _django(state, False, True),
            _django(state, True, True),
        ]
        proxy = CountingProxy(state.pooler_port)
        trips: dict[str, float] = {}
        for s in scenarios:
            run, close = s.make(proxy.port)
            try:
                trips[s.name] = _turns(proxy, run, args.queries)
            finally:
                close()
        kept = {s.name: s.make(state.pooler_port) for s in scenarios}
        times: dict[str, list[float]] = {s.name: [] for s in scenarios}
        try:
            for run, _ in kept.values():
                _timed(run, 20)  # warm up: types fetched, statements prepared
            for _ in range(args.rounds):
                for name, (run, _) in kept.items():
                    times[name].append(_timed(run, args.queries))
        finally:
            for _, close in kept.values():
                close()
    width = max(len(s.name) for s in scenarios)
    print(f"{'scenario':<{width}}  trips/query  ms/query  ms/query at {args.rtt_ms:g} ms RTT")
    for s in scenarios:
        ms = statistics.median(times[s.name])
        at_rtt = ms + trips[s.name] * args.rtt_ms
        print(f"{s.name:<{width}}  {trips[s.name]:11.2f}  {ms:8.3f}  {at_rtt:8.3f}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    socket.setdefaulttimeout(60)
    sys.exit(main())
