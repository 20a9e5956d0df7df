"""The parameters the core builds really connect, with both drivers, to both endpoints."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

import neon_connect
from neon_connect import asyncpg_params, psycopg_params, resolve

pytestmark = pytest.mark.integration


def _server_port_and_pooled(neon_local, run):
    before = neon_local.pooler_transactions()
    port = run()
    return port, neon_local.pooler_transactions() > before


def test_psycopg_connects_pooled_and_direct(neon_local):
    endpoints = resolve(env=neon_local.env())
    for endpoint, expect_pooler in ((endpoints.app, True), (endpoints.session(), False)):

        def run(endpoint=endpoint):
            with psycopg.connect(**psycopg_params(endpoint)) as conn:
                assert conn.info.pgconn.ssl_in_use
                row = conn.execute("SELECT inet_server_port()").fetchone()
                conn.commit()
                return row[0]

        port, via_pooler = _server_port_and_pooled(neon_local, run)
        assert port == neon_local.state.pg_port
        assert via_pooler is expect_pooler


async def test_asyncpg_connects_pooled_and_direct_with_a_console_style_url(neon_local):
    env = {
        k: v.replace("sslmode=require", "sslmode=require&channel_binding=require")
        for k, v in neon_local.env().items()
    }
    endpoints = resolve(env=env)
    for endpoint in (endpoints.app, endpoints.session()):
        conn = await asyncpg.connect(**asyncpg_params(endpoint))
        try:
            assert await conn.fetchval("SELECT current_setting('ssl')") == "on"
        finally:
            await conn.close()


def test_connect_helper_uses_the_environment(neon_local, monkeypatch):
    for key, value in neon_local.env().items():
        monkeypatch.setenv(key, value)
    with neon_connect.connect() as conn:
        assert conn.prepare_threshold is None
    with neon_connect.connect(direct=True) as conn:
        assert conn.prepare_threshold == 5


def test_refused_connect_is_retried_then_named(neon_local, caplog):
    endpoint = resolve("postgresql://neondb_owner:x@127.0.0.1:1/neondb?sslmode=require").app
    policy = neon_connect.RetryPolicy(timeout=0.5, initial_delay=0.05, max_delay=0.1)
    with pytest.raises(psycopg.OperationalError) as info:
        policy.call(lambda: psycopg.connect(**psycopg_params(endpoint)), endpoint=endpoint)
    assert "direct endpoint 127.0.0.1:1" in info.value.__notes__[-1]
    assert "retry" in caplog.text


def test_cold_start_paused_pooler_is_waited_out(neon_local):
    """PAUSE on PgBouncer stands in for a compute waking up: the connect waits, then works."""
    import threading
    import time

    endpoint = resolve(env=neon_local.env()).app
    with neon_local.admin() as admin:
        admin.execute("PAUSE neondb")
        timer = threading.Timer(1.5, lambda: admin.execute("RESUME neondb"))
        timer.start()
        started = time.monotonic()
        try:
            with psycopg.connect(**psycopg_params(endpoint)) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            timer.join()
    assert time.monotonic() - started >= 1.0
