"""The library's paths through the stand-in as ``neon-local up`` exports it: behind its
Neon-like proxy, with Neon's console URLs (``channel_binding=require``), on both endpoints.

The suite's shared stand-in runs without the proxy (``neon_local_proxy = "off"`` in
``pyproject.toml``: its tests read each client's socket as PgBouncer and PostgreSQL see it).
These tests start one with it. Where a connection went is asked of PostgreSQL in a way a
relay does not hide: the backend running the statements is the one whose key the client got
at login only when no PgBouncer sits between. The proxy's log says how each client came.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy

import neon_connect
import neon_sqlalchemy
from neon_connect import RetryPolicy
from neon_connect._params import DIRECT_TLS_LIBPQ
from neon_local.faults import Faults
from neon_local.neon_proxy import COMPUTE_UNREACHABLE, negotiate_protocol
from neon_local.standin import StandInState, running

pytestmark = pytest.mark.integration

DIRECT_TLS = psycopg.pq.version() >= DIRECT_TLS_LIBPQ


@pytest.fixture(scope="module")
def proxied() -> Iterator[StandInState]:
    with running(pool_size=3, max_connections=30, proxy=True) as state:
        assert state.proxied
        yield state


@pytest.fixture
def exported(proxied: StandInState, monkeypatch: pytest.MonkeyPatch) -> StandInState:
    """The stand-in's export lines, in the environment, as after ``eval "$(neon-local up)"``."""
    for name, value in proxied.env().items():
        assert value.endswith("sslmode=require&channel_binding=require")
        monkeypatch.setenv(name, value)
    return proxied


def _proxy_log(state: StandInState) -> str:
    return (Path(state.directory) / "proxy.log").read_text()


def _same_backend(dbapi_connection: object) -> bool:
    """Whether statements run on the backend this connection logged in to (no pooler)."""
    info = dbapi_connection.info  # type: ignore[attr-defined]  # psycopg and psycopg2 alike
    with dbapi_connection.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute("SELECT pg_backend_pid()")
        return bool(cur.fetchone()[0] == info.backend_pid)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_engines_reach_each_endpoint_with_channel_binding(exported, driver):
    scheme = f"postgresql+{driver}://"
    before = _proxy_log(exported).count("logged in with SCRAM-SHA-256-PLUS")
    for direct, url in (
        (False, exported.pooled_url.replace("postgresql://", scheme) + "&pgbouncer=true"),
        (True, exported.direct_url.replace("postgresql://", scheme)),
    ):
        engine = neon_sqlalchemy.create_engine(url)
        try:
            with engine.begin() as conn:
                ssl = conn.execute(sqlalchemy.text("SELECT current_setting('ssl')")).scalar()
                same = _same_backend(conn.connection.dbapi_connection)
        finally:
            engine.dispose()
        assert engine.dialect.driver == driver
        assert ssl == "on" and same is direct
    # both logins ended at the proxy, bound to its TLS channel
    assert _proxy_log(exported).count("logged in with SCRAM-SHA-256-PLUS") == before + 2


def test_control_the_pooled_url_without_the_proxy_is_refused(exported):
    """What the proxy is for: PgBouncer itself offers no channel binding."""
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        psycopg.connect(exported.pgbouncer_url + "&channel_binding=require")


def test_asyncpg_logs_in_without_binding_and_reaches_both_endpoints(exported):
    """asyncpg has no channel binding: neon-connect drops the setting, the proxy's plain
    SCRAM takes it."""

    async def run(direct: bool) -> int:
        engine = neon_sqlalchemy.create_async_engine(driver="asyncpg", direct=direct)
        try:
            async with engine.connect() as conn:
                pid = (await conn.execute(sqlalchemy.text("SELECT pg_backend_pid()"))).scalar()
                raw = (await conn.get_raw_connection()).driver_connection
                return int(pid == raw.get_server_pid())  # type: ignore[union-attr]
        finally:
            await engine.dispose()

    assert [asyncio.run(run(direct)) for direct in (False, True)] == [0, 1]
    assert "logged in with SCRAM-SHA-256\n" in _proxy_log(exported)


def test_control_raw_asyncpg_fails_on_the_console_url_as_on_neon(exported):
    """asyncpg sends ``channel_binding`` on as a startup parameter, which the pooler refuses:
    the field failure neon-connect's asyncpg parameters avoid (the test above)."""
    import asyncpg

    async def run() -> None:
        await asyncpg.connect(exported.pooled_url)

    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        asyncio.run(run())


def test_direct_tls_when_asked_and_libpq_can(exported, monkeypatch):
    """``PGSSLNEGOTIATION=direct`` (or ``sslnegotiation=direct`` in the URL) opens TLS from the
    first byte where libpq is 17 or newer; the ``lowest`` session's libpq 16 falls back to
    ``SSLRequest`` instead of failing."""
    monkeypatch.setenv("PGSSLNEGOTIATION", "direct")
    log_before = _proxy_log(exported)
    with neon_connect.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    new = _proxy_log(exported)[len(log_before) :]
    assert ("TLS by direct" in new) is DIRECT_TLS
    assert ("TLS by sslrequest" in new) is not DIRECT_TLS


def test_a_connect_while_the_pooler_is_down_is_retried_until_it_is_back(exported):
    """Behind the proxy, a connect while PgBouncer is down reads Neon's "Couldn't connect to
    compute node" (not a refused port), which neon-connect retries, as on Neon."""
    faults = Faults(exported)
    faults.stop_pooler()
    back = threading.Timer(1.0, faults.start_pooler)
    back.start()
    try:
        with neon_connect.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        back.join()


def test_control_without_retrying_the_connect_fails_with_neons_words(exported):
    faults = Faults(exported)
    faults.stop_pooler()
    try:
        with pytest.raises(psycopg.OperationalError, match=COMPUTE_UNREACHABLE):
            neon_connect.connect(retry=RetryPolicy(timeout=0))
    finally:
        faults.start_pooler()


@pytest.mark.parametrize("endpoint", ["pooled_url", "direct_url"])
@pytest.mark.parametrize("how", ["cancel", "cancel_safe", "psycopg2", "asyncpg"])
def test_a_cancel_reaches_the_statement_through_the_proxy(proxied, endpoint, how):
    """libpq before 17's cancel API (psycopg's ``cancel()``), psycopg2 and asyncpg send the
    cancel request without TLS; libpq's new one (``cancel_safe()``) over TLS, and reads the
    server's close after it. Each stops the statement, and the cancel itself raises nothing,
    as through Neon's proxy."""
    url = getattr(proxied, endpoint)
    sleep = "SELECT pg_sleep(10)"
    started = time.monotonic()
    if how == "asyncpg":

        async def run() -> int:
            import asyncpg

            conn = await asyncpg.connect(url.replace("&channel_binding=require", ""))
            try:
                with pytest.raises(asyncio.TimeoutError):  # asyncpg cancels it, then says so
                    await conn.execute(sleep, timeout=0.3)
                return int(await conn.fetchval("SELECT 1"))  # free at once: it was cancelled
            finally:
                await conn.close()

        assert asyncio.run(run()) == 1
        assert time.monotonic() - started < 5
        return
    failed: list[BaseException] = []

    def cancel(conn: Any) -> None:
        try:
            conn.cancel() if how == "psycopg2" else getattr(conn, how)()
        except Exception as error:  # the cancel's own failure, in its thread
            failed.append(error)

    if how == "psycopg2":
        import psycopg2
        import psycopg2.errors

        conn2 = psycopg2.connect(url)
        timer = threading.Timer(0.3, cancel, (conn2,))
        timer.start()
        try:
            with pytest.raises(psycopg2.errors.QueryCanceled), conn2.cursor() as cur:
                cur.execute(sleep)
        finally:
            timer.join()
            conn2.close()
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            timer = threading.Timer(0.3, cancel, (conn,))
            timer.start()
            try:
                with pytest.raises(psycopg.errors.QueryCanceled):
                    conn.execute(sleep)
            finally:
                timer.join()
    assert failed == []


def test_a_pipeline_sending_while_its_results_come_back_does_not_stall(proxied):
    """psycopg's executemany (a pipeline) keeps sending rows while the first results come
    back. A relay that waits to write one way while the other way fills up stalls both (it
    did, found by review): each direction now waits in its own backlog."""
    rows = [(i, "x" * 200_000) for i in range(400)]
    done: dict[str, object] = {}

    def run() -> None:
        with psycopg.connect(proxied.direct_url, autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE bulk (id int, body text)")
            cur = conn.cursor()
            cur.executemany("INSERT INTO bulk VALUES (%s, %s) RETURNING body", rows, returning=True)
            count = 0
            while True:
                count += len(cur.fetchall())
                if not cur.nextset():
                    break
            done["rows"] = count

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert done == {"rows": len(rows)}, "the relay stalled"


def test_running_out_of_descriptors_does_not_end_the_proxy(proxied):
    """An ``accept()`` that fails (EMFILE, at the descriptor limit) used to end the front's
    accept thread for good: the port kept listening and every later client hung."""
    pid = int((Path(proxied.directory) / "proxy.pid").read_text())
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{pid}/fd")), hard))
    try:
        with contextlib.suppress(psycopg.OperationalError):  # refused at the limit, or not
            psycopg.connect(proxied.pooled_url, connect_timeout=3).close()
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    with psycopg.connect(proxied.pooled_url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_newer_protocol_is_negotiated_down_to_what_the_servers_speak(proxied):
    """libpq 18's ``max_protocol_version=latest`` asks for 3.2; PostgreSQL 15 and PgBouncer
    answer 3.0. The proxy ends the login, so it answers that first itself and asks the server
    for 3.0: the server's own answer, after the login, broke the connection (found by review)."""

    def startup(version: int, *pairs: tuple[bytes, bytes]) -> bytes:
        body = struct.pack("!i", version) + b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
        return struct.pack("!i", 4 + len(body) + 1) + body + b"\0"  # its length, body, end

    plain = startup(3 << 16, (b"user", b"u"), (b"database", b"d"))
    assert negotiate_protocol(plain) == (plain, None)
    sent, answer = negotiate_protocol(
        startup((3 << 16) | 2, (b"user", b"u"), (b"_pq_.x", b"1"), (b"database", b"d"))
    )
    assert sent == plain
    assert answer == struct.pack("!ii", 3 << 16, 1) + b"_pq_.x\0"
    if psycopg.pq.version() >= 180000:  # the keyword is libpq 18's
        for url in (proxied.pooled_url, proxied.direct_url):
            with psycopg.connect(url, max_protocol_version="latest") as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
