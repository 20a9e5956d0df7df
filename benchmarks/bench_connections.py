"""What each connection strategy costs, side by side, in one run against the local stand-in.

    .venv/bin/python benchmarks/bench_connections.py [--rounds 7] [--ops 40]

Scenarios are interleaved round by round (A B C ... A B C ...) so that a noisy neighbour
slows them all alike; the report gives medians of per-round means and ratios to a baseline.
Nothing here asserts a time: the numbers are for reading.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import psycopg
import sqlalchemy
from sqlalchemy import text

import neon_sqlalchemy
from neon_connect import psycopg_params, resolve
from neon_local import running


def per_op_ms(fn: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - started) * 1000 / ops


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=40)
    args = parser.parse_args()

    with running(pool_size=5, proxy=False) as state:
        endpoints = resolve(env=state.env())
        pooled, direct = psycopg_params(endpoints.app), psycopg_params(endpoints.session())

        def connect_query_close(params: dict[str, object]) -> Callable[[], object]:
            def op() -> object:
                with psycopg.connect(**params) as conn:  # type: ignore[arg-type]
                    return conn.execute("SELECT 1").fetchone()

            return op

        kept_pooled = psycopg.connect(**pooled, autocommit=True)
        kept_direct = psycopg.connect(**direct, autocommit=True)
        sa_pooled = neon_sqlalchemy.create_engine(env=state.env())  # NullPool
        sa_direct = neon_sqlalchemy.create_engine(
            env=state.env(), direct=True
        )  # QueuePool + pre-ping
        sa_plain_direct = sqlalchemy.create_engine(
            state.direct_url.replace("postgresql://", "postgresql+psycopg://")
        )

        def sa_op(engine: sqlalchemy.Engine) -> Callable[[], object]:
            def op() -> object:
                with engine.connect() as conn:
                    return conn.execute(text("SELECT 1")).scalar()

            return op

        scenarios: dict[str, Callable[[], object]] = {
            "library: resolve() + psycopg_params()": lambda: psycopg_params(
                resolve(env=state.env()).app
            ),
            "query on a kept pooled connection": lambda: kept_pooled.execute("SELECT 1").fetchone(),
            "query on a kept direct connection": lambda: kept_direct.execute("SELECT 1").fetchone(),
            "connect+query+close, pooled (TLS+SCRAM to PgBouncer)": connect_query_close(pooled),
            "connect+query+close, direct (TLS+SCRAM to Postgres)": connect_query_close(direct),
            "neon_sqlalchemy pooled engine (NullPool)": sa_op(sa_pooled),
            "neon_sqlalchemy direct engine (pool + pre-ping)": sa_op(sa_direct),
            "plain SQLAlchemy engine, direct (pool, no pre-ping)": sa_op(sa_plain_direct),
        }
        rounds: dict[str, list[float]] = {name: [] for name in scenarios}
        for fn in scenarios.values():
            fn()  # warm up: pools filled, code paths loaded
        for _ in range(args.rounds):
            for name, fn in scenarios.items():
                rounds[name].append(per_op_ms(fn, args.ops))
        for closeable in (kept_pooled, kept_direct):
            closeable.close()
        for engine in (sa_pooled, sa_direct, sa_plain_direct):
            engine.dispose()

    medians = {name: statistics.median(values) for name, values in rounds.items()}
    base = medians["query on a kept pooled connection"]
    width = max(map(len, medians))
    print(
        f"{args.rounds} interleaved rounds x {args.ops} ops; median of round means; ratio to a query on a kept pooled connection"
    )
    for name, ms in medians.items():
        spread = max(rounds[name]) - min(rounds[name])
        print(f"  {name.ljust(width)}  {ms:8.3f} ms/op  (spread {spread:6.3f})  x{ms / base:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
