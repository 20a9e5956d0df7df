"""The benchmark's delay proxy, against the real stand-in: it delays, and it counts round trips."""

from __future__ import annotations

import time

import psycopg
import pytest

from benchmarks.proxy import ProxyProcess
from neon_connect import psycopg_params, resolve
from neon_local.pytest_plugin import NeonLocal

pytestmark = pytest.mark.integration


def _pooled_params(neon_local: NeonLocal, port: int) -> dict[str, object]:
    url = neon_local.pooled_url.replace(f":{neon_local.state.pooler_port}/", f":{port}/")
    assert url != neon_local.pooled_url
    return psycopg_params(resolve(env={"DATABASE_URL": url}).app)


def _best_query_seconds(conn: psycopg.Connection[object], n: int = 5) -> float:
    best = float("inf")
    for _ in range(n):
        started = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        best = min(best, time.perf_counter() - started)
    return best


def test_proxy_counts_round_trips_and_adds_the_delay(neon_local: NeonLocal) -> None:
    with ProxyProcess() as proxies:
        port = proxies.add("pooled", "127.0.0.1", neon_local.state.pooler_port)
        params = _pooled_params(neon_local, port)

        conn = psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]
        after_connect = proxies.counts()["pooled"]
        # SSLRequest, TLS handshake, startup + SCRAM: several round trips, none of them free
        assert after_connect.connections == 1 and after_connect.open == 1
        assert 4 <= after_connect.round_trips <= 7

        fast = _best_query_seconds(conn)
        after_queries = proxies.counts()["pooled"]
        assert after_queries.round_trips - after_connect.round_trips == 5  # one per query

        proxies.set_rtt(0.020)
        slow = _best_query_seconds(conn)
        assert slow >= 0.020 > fast
        assert slow < 0.020 + fast + 0.050  # the delay, not much more

        conn.close()
        time.sleep(0.05)  # the proxy sees the close after its one-way delay
        closed = proxies.counts()["pooled"]
        assert closed.open == 0 and closed.peak_open == 1
        # five queries; then Terminate is answered by the server's TLS close_notify, which
        # TCP may deliver in one or more turns (libpq build and timing): a close is cheap
        assert 1 <= closed.round_trips - after_queries.round_trips - 5 <= 3
