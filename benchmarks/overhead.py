"""The CPU our code adds, as a ratio to the same path without it (no proxy, one process).

Run by ``benchmarks.run`` with ``DATABASE_URL`` / ``DATABASE_URL_UNPOOLED`` set; prints JSON.
Each pair alternates op by op and reports the median CPU time (``time.process_time``)
per operation: the client's CPU, not the server's or the network's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from benchmarks.sa_app import NOTE, ONE, READ_ONE, READ_TWO, WRITE
from neon_connect import psycopg_params, resolve

Op = Callable[[], object]
READS_AND_WRITE = ((READ_ONE, ONE), (READ_TWO, None), (WRITE, NOTE))
"""The request of sa_app.py's routes, with its values."""


def pair(ours: Op, without: Op, *, rounds: int, n: int) -> dict[str, float]:
    """Alternate the two paths op by op, each going first every other time: an op runs a
    little slower or faster after the other one (caches, the server's turn), and a fixed order
    put that in the ratio. The median of per-op CPU times resists outliers."""
    ours()
    without()  # warm up
    a: list[float] = []
    b: list[float] = []
    clock = time.process_time
    orders = (((ours, a), (without, b)), ((without, b), (ours, a)))
    for i in range(rounds * n):
        for op, samples in orders[i % 2]:
            started = clock()
            op()
            samples.append(clock() - started)
    mine, theirs = statistics.median(a) * 1000, statistics.median(b) * 1000
    return {"ours_ms": mine, "without_ms": theirs, "ratio": mine / theirs, "samples": len(a)}


def sa_request(engine: sqlalchemy.Engine) -> Op:
    def op() -> None:
        with engine.begin() as conn:
            for statement, values in READS_AND_WRITE:
                conn.execute(text(statement), values)

    return op


def _ignore_start(status: str, headers: object, exc_info: object = None) -> Callable[[bytes], None]:
    return lambda body: None


def django_request(path: str) -> Op:
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
    }

    def op() -> None:
        response = handler({**environ, "wsgi.input": io.BytesIO()}, _ignore_start)
        b"".join(response)
        response.close()  # request_finished: Django closes or keeps the connection here

    return op


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rounds = args.rounds
    env = {k: os.environ[k] for k in ("DATABASE_URL", "DATABASE_URL_UNPOOLED")}
    url = env["DATABASE_URL"]
    out: dict[str, Any] = {}

    # 1. Our per-connect work alone: environment -> endpoints -> driver parameters.
    calls = 2000
    started = time.process_time()
    for _ in range(calls):
        psycopg_params(resolve(env=env).app)
    resolve_ms = (time.process_time() - started) * 1000 / calls

    def ours_connect() -> None:
        with psycopg.connect(**psycopg_params(resolve(env=env).app)) as conn:
            conn.execute("SELECT 1")

    def plain_connect() -> None:
        with psycopg.connect(url, prepare_threshold=None) as conn:
            conn.execute("SELECT 1")

    out["connect + SELECT 1 + close (pooled)"] = pair(
        ours_connect, plain_connect, rounds=rounds, n=30
    )
    out["connect + SELECT 1 + close (pooled)"]["resolve_params_ms"] = resolve_ms

    # 2. SQLAlchemy: the engine's events (retry, fork safety) against a plain engine.
    import neon_sqlalchemy

    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    plain_args = {"connect_args": {"prepare_threshold": None}}
    ours_null = neon_sqlalchemy.create_engine(env=env)
    plain_null = sqlalchemy.create_engine(sa_url, poolclass=NullPool, **plain_args)
    out["SQLAlchemy request, NullPool"] = pair(
        sa_request(ours_null), sa_request(plain_null), rounds=rounds, n=30
    )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_pool = neon_sqlalchemy.create_engine(env=env, allow_client_pool=True)
    plain_pool = sqlalchemy.create_engine(
        sa_url,
        pool_size=2,
        max_overflow=0,
        pool_timeout=10,
        pool_recycle=240,
        pool_pre_ping=True,
        pool_reset_on_return="rollback",
        **plain_args,
    )
    out["SQLAlchemy request, kept connection (client pool)"] = pair(
        sa_request(ours_pool), sa_request(plain_pool), rounds=rounds, n=40
    )
    # Against a pool that checks nothing at checkout: what the socket check itself costs
    bare_pool = sqlalchemy.create_engine(
        sa_url, pool_size=2, max_overflow=0, pool_timeout=10, pool_recycle=240, **plain_args
    )
    out["SQLAlchemy request, kept connection, against no pre-ping"] = pair(
        sa_request(ours_pool), sa_request(bare_pool), rounds=rounds, n=40
    )
    for engine in (ours_null, plain_null, ours_pool, plain_pool, bare_pool):
        engine.dispose()

    # 3. Django: neon_django.backend against Django's own backend with the same settings.
    spec = {"url": url, "direct_url": env["DATABASE_URL_UNPOOLED"]}
    aliases = {
        "neon": "neon",
        "stock": "neon+stock",
        "neon_240": "neon_persistent",
        "stock_240": "neon_persistent+stock",
        "bare_240": "neon_persistent+bare",
    }
    os.environ["BENCH_DJANGO"] = json.dumps({a: {"kind": k, **spec} for a, k in aliases.items()})
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.djangosite.settings"
    import django

    django.setup()
    out["Django request, CONN_MAX_AGE=0"] = pair(
        django_request("/django/neon"), django_request("/django/stock"), rounds=rounds, n=30
    )
    out["Django request, CONN_MAX_AGE=240"] = pair(
        django_request("/django/neon_240"),
        django_request("/django/stock_240"),
        rounds=rounds,
        n=40,
    )
    out["Django request, CONN_MAX_AGE=240, against no health check"] = pair(
        django_request("/django/neon_240"),
        django_request("/django/bare_240"),
        rounds=rounds,
        n=40,
    )
    json.dump(out, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
