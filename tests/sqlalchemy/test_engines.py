"""neon_sqlalchemy engines against the stand-in; every failure first shown with a plain engine."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import socket
import warnings

import asyncpg
import psycopg.errors
import pytest
import sqlalchemy
from sqlalchemy import exc, text
from sqlalchemy.events import ConnectionEvents
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

import neon_sqlalchemy
from neon_connect import (
    ConfigurationError,
    DoublePoolingError,
    InvalidURLError,
    NoDirectEndpointError,
    SessionStateError,
)
from tests.constants import SECRET

pytestmark = pytest.mark.integration
QUERY = text("SELECT count(*) FROM pg_class WHERE relname LIKE :p AND relpages >= :n")
PREPARE_ERRORS = (
    psycopg.errors.DuplicatePreparedStatement,
    psycopg.errors.InvalidSqlStatementName,
    psycopg.errors.ProtocolViolation,
)


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _same_statement_on_several_backends(engine, neon_local):
    """Run one statement often on two connections while another client takes their backends."""
    errors = []

    def run(conn, times):
        for i in range(times):
            try:
                conn.execute(QUERY, {"p": "pg_%", "n": i % 2}).scalar()
            except exc.DBAPIError as e:
                errors.append(e.orig)

    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as a,
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as b,
    ):
        run(a, 8)  # prepared on the backend A used
        with neon_local.hold_server_connection():  # that backend is now busy elsewhere
            run(a, 4)
            run(b, 8)
        run(a, 4)
        run(b, 4)
    return errors


def test_psycopg_prepared_statements_fail_with_a_plain_engine_on_an_old_pooler(neon_local):
    """On PgBouncer 1.18 psycopg's ``_pg3_N`` names collide; Neon's >= 1.22 tracks them."""
    plain = sqlalchemy.create_engine(_psycopg_url(neon_local.pooled_url))
    try:
        errors = _same_statement_on_several_backends(plain, neon_local)
    finally:
        plain.dispose()
    if neon_local.tracks_prepared_statements:
        assert errors == []
        return
    assert errors and all(isinstance(e, PREPARE_ERRORS) for e in errors), errors
    assert any("_pg3_" in str(e) for e in errors)


def test_psycopg_prepared_statements_never_fail_with_ours(neon_local):
    engine = neon_sqlalchemy.create_engine(env=neon_local.env())
    try:
        assert isinstance(engine.pool, NullPool)
        assert _same_statement_on_several_backends(engine, neon_local) == []
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.prepare_threshold is None
    finally:
        engine.dispose()


async def _fifty_tasks(engine):
    errors = []

    async def task():
        for i in range(10):
            try:
                async with engine.connect() as conn:
                    await conn.execute(QUERY, {"p": "pg_%", "n": i % 2})
                    await conn.commit()
            except exc.DBAPIError as e:
                errors.append(e.orig)
            except asyncpg.PostgresError as e:  # older SQLAlchemy: unwrapped from on-connect
                errors.append(e)

    await asyncio.gather(*(task() for _ in range(50)))
    await engine.dispose()
    return errors


async def test_asyncpg_statements_fail_with_a_plain_engine_on_an_old_pooler(neon_local):
    """asyncpg's statement cache (and SQLAlchemy's) break on PgBouncer 1.18, not on >= 1.22."""
    url = neon_local.pooled_url.replace("postgresql://", "postgresql+asyncpg://").replace(
        "?sslmode=require", ""
    )
    plain = sa_create_async_engine(url, connect_args={"ssl": "require"})
    errors = await _fifty_tasks(plain)
    if neon_local.tracks_prepared_statements:
        assert errors == []
        return
    assert errors
    assert any("__asyncpg_stmt_" in str(e) for e in errors), {str(e)[:120] for e in errors}


async def test_asyncpg_statements_never_fail_with_ours(neon_local):
    engine = neon_sqlalchemy.create_async_engine(
        env=neon_local.env(), driver="asyncpg", pool_pre_ping=True
    )
    assert isinstance(engine.sync_engine.pool, NullPool)
    assert await _fifty_tasks(engine) == []


async def test_neon_console_url_breaks_plain_asyncpg_and_works_with_ours(neon_local):
    console = neon_local.pooled_url + "&channel_binding=require"
    plain = sa_create_async_engine(console.replace("postgresql://", "postgresql+asyncpg://"))
    with pytest.raises(TypeError, match="sslmode|channel_binding"):
        async with plain.connect():
            pass
    await plain.dispose()
    ours = neon_sqlalchemy.create_async_engine(
        console.replace("postgresql://", "postgresql+asyncpg://")
    )
    async with ours.connect() as conn:
        assert (await conn.execute(text("SELECT current_setting('ssl')"))).scalar() == "on"
    await ours.dispose()


async def _asyncpg_socket_options(engine: AsyncEngine) -> tuple[int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE and TCP_USER_TIMEOUT on an asyncpg connection's socket."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        sock = raw.driver_connection._transport.get_extra_info("socket")
        options = (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        )
    await engine.dispose()
    return options


async def test_asyncpg_connections_get_the_keepalives_libpq_gets(neon_local):
    """asyncpg has no keepalive setting: a half-open connection waited the kernel's 2 hours."""
    url = neon_local.pooled_url.replace("postgresql://", "postgresql+asyncpg://")
    ours = neon_sqlalchemy.create_async_engine(url)
    assert await _asyncpg_socket_options(ours) == (1, 30, 60000)
    own = neon_sqlalchemy.create_async_engine(url + "&keepalives_idle=7&tcp_user_timeout=9000")
    assert await _asyncpg_socket_options(own) == (1, 7, 9000)  # the URL's own values win
    off = neon_sqlalchemy.create_async_engine(url + "&keepalives=0")
    assert (await _asyncpg_socket_options(off))[0] == 0


async def test_control_a_plain_asyncpg_engine_has_no_keepalives(neon_local):
    url = neon_local.pooled_url.replace("postgresql://", "postgresql+asyncpg://")
    plain = sa_create_async_engine(
        url.replace("?sslmode=require", ""), connect_args={"ssl": "require"}
    )
    assert await _asyncpg_socket_options(plain) == (0, 7200, 0)


async def _reuse_after_terminate(engine: AsyncEngine, direct_url: str) -> tuple[int, int]:
    """Backend pids before and after the server ended the kept connection while idle."""
    async with engine.connect() as conn:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
    with psycopg.connect(direct_url, autocommit=True) as owner:
        owner.execute("SELECT pg_terminate_backend(%s)", [pid])
    await asyncio.sleep(0.3)  # the FATAL reaches the socket, and asyncpg's event loop
    try:
        async with engine.connect() as conn:
            return pid, (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
    finally:
        await engine.dispose()


async def test_a_kept_asyncpg_connection_the_server_ended_is_replaced_at_checkout(neon_local):
    """The liveness check at checkout (issue 21) on asyncpg: no ping, no error."""
    engine = neon_sqlalchemy.create_async_engine(
        env=neon_local.env(), driver="asyncpg", direct=True
    )
    before, after = await _reuse_after_terminate(engine, neon_local.direct_url)
    assert after != before


async def test_control_a_plain_asyncpg_engine_with_its_own_pool_fails_on_that_connection(
    neon_local,
):
    url = neon_local.direct_url.replace("postgresql://", "postgresql+asyncpg://")
    plain = sa_create_async_engine(
        url.replace("?sslmode=require", ""), connect_args={"ssl": "require"}
    )
    with pytest.raises(exc.DBAPIError, match="connection"):
        await _reuse_after_terminate(plain, neon_local.direct_url)


async def test_async_psycopg_engine_pooled_and_direct(neon_local):
    for direct in (False, True):
        engine = neon_sqlalchemy.create_async_engine(env=neon_local.env(), direct=direct)
        before = neon_local.pooler_transactions()
        async with engine.connect() as conn:
            assert (
                await conn.execute(text("SELECT inet_server_port()"))
            ).scalar() == neon_local.state.pg_port
            await conn.commit()
        await engine.dispose()
        assert (neon_local.pooler_transactions() > before) is not direct


def _own_ports(dbapi_connection) -> tuple[int, int]:
    """Local and peer port of this driver connection's socket (psycopg and psycopg2 both
    expose ``fileno()``): PostgreSQL sees them as ``inet_client_port()`` and
    ``inet_server_port()`` only without a pooler between."""
    with socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
        return int(sock.getsockname()[1]), int(sock.getpeername()[1])


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sync_engines_pooled_and_direct_with_each_driver(neon_local, driver):
    """Both libpq drivers: traffic through PgBouncer, direct=True past it, TLS on both."""
    scheme = f"postgresql+{driver}://"
    for direct, url in (
        (False, neon_local.pooled_url.replace("postgresql://", scheme) + "&pgbouncer=true"),
        (True, neon_local.direct_url.replace("postgresql://", scheme)),
    ):
        engine = neon_sqlalchemy.create_engine(url)
        try:
            assert isinstance(engine.pool, QueuePool) is direct  # NullPool on the pooler
            assert engine.dialect.driver == driver
            with engine.begin() as conn:
                client_port, server_port, ssl = conn.execute(
                    text("SELECT inet_client_port(), inet_server_port(), current_setting('ssl')")
                ).one()
                own = _own_ports(conn.connection.dbapi_connection)
        finally:
            engine.dispose()
        assert ssl == "on"
        # through PgBouncer, the server sees PgBouncer's socket
        assert ((client_port, server_port) == own) is direct


@pytest.mark.parametrize("direct", [False, True], ids=["pooled", "direct"])
def test_the_driver_named_in_database_url_is_the_one_used(neon_local, direct):
    """``DATABASE_URL=postgresql+psycopg2://...`` with no URL argument: psycopg2, on both
    endpoints (the unpooled variable names no driver, so the pooled one's applies), as
    SQLAlchemy reads such a URL. It was psycopg 3, whatever the variable said."""
    env = neon_local.env()
    env["DATABASE_URL"] = env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://")
    engine = neon_sqlalchemy.create_engine(env=env, direct=direct)
    try:
        assert engine.dialect.driver == "psycopg2"
        with engine.begin() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    plain = neon_sqlalchemy.create_engine(env=neon_local.env(), direct=direct)
    assert plain.dialect.driver == "psycopg"  # control: no driver named, the default
    plain.dispose()


def test_the_async_driver_named_in_database_url_is_the_one_used(neon_local):
    env = neon_local.env()
    env["DATABASE_URL"] = env["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://")

    async def run() -> tuple[str, int, str]:
        engine = neon_sqlalchemy.create_async_engine(env=env)
        chosen = neon_sqlalchemy.create_async_engine(env=env, driver="psycopg")  # the argument wins
        try:
            async with engine.begin() as conn:
                one = (await conn.execute(text("SELECT 1"))).scalar()
            return engine.dialect.driver, int(one), chosen.dialect.driver
        finally:
            await engine.dispose()
            await chosen.dispose()

    assert asyncio.run(run()) == ("asyncpg", 1, "psycopg")


def test_a_url_argument_names_the_driver_whatever_the_environment_says(neon_local):
    env = neon_local.env()
    env["DATABASE_URL"] = env["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://")
    url = neon_local.pooled_url + "&pgbouncer=true"  # no driver named: the default
    engine = neon_sqlalchemy.create_engine(url, env=env)
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


@pytest.mark.filterwarnings("ignore::neon_sqlalchemy.NeonClientPoolWarning")
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"allow_client_pool": True}, {"direct": True}],
    ids=["nullpool", "pool", "direct"],
)
def test_our_engines_keep_statements_off_sqlalchemys_connection_event_dispatch(neon_local, kwargs):
    """Any Connection-level listener (``before_cursor_execute``, ``commit``...) makes every
    statement walk SQLAlchemy's whole event dispatch: it was 10 % of a kept connection's
    request CPU. The guard, the rerun and the COMMIT mark live on dialect and pool events."""
    engine = neon_sqlalchemy.create_engine(env=neon_local.env(), **kwargs)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        connection_events = [
            name
            for name in dir(ConnectionEvents)
            if not name.startswith("_") and getattr(engine.dispatch, name, None)
        ]
        assert connection_events == []
        assert engine.dialect.dispatch.do_execute  # the dialect's events carry them
    finally:
        engine.dispose()


def test_an_apps_own_do_execute_listeners_still_run_after_ours(neon_local):
    """Ours sends the statement and returns True, which ends SQLAlchemy's loop over the
    dialect's listeners: an app's own (registered after the engine is made) never ran. Now
    they run in order after the guard, and one that sends the statement itself takes it."""
    engine = neon_sqlalchemy.create_engine(env=neon_local.env())
    seen: list[str] = []
    taken: list[str] = []

    @sqlalchemy.event.listens_for(engine, "do_execute")
    def watch(cursor, statement, parameters, context):
        seen.append(statement)

    @sqlalchemy.event.listens_for(engine, "do_execute")
    def take(cursor, statement, parameters, context):
        if "neon_taken" in statement:
            taken.append(statement)
            cursor.execute(statement.replace("1 AS neon_taken", "2 AS neon_taken"), parameters)
            return True
        return False

    try:
        with engine.begin() as conn:
            assert conn.execute(text("SELECT :x AS v"), {"x": 7}).scalar() == 7
            assert conn.execute(text("SELECT 1 AS neon_taken")).scalar() == 2
            with pytest.raises(SessionStateError):  # the guard still comes first
                conn.execute(text("SET search_path = public"))
        assert [s for s in seen if "SELECT" in s] == ["SELECT %(x)s AS v", "SELECT 1 AS neon_taken"]
        assert taken == ["SELECT 1 AS neon_taken"]
        assert not any("search_path" in s for s in seen)
    finally:
        engine.dispose()


def test_direct_engine_checks_at_checkout_recycles_and_survives_a_killed_connection(neon_local):
    engine = neon_sqlalchemy.create_engine(env=neon_local.env(), direct=True)
    try:
        assert isinstance(engine.pool, QueuePool)
        # the zero-round-trip checkout check replaces pre-ping (tests/resilience/test_worker_loops.py)
        assert engine.pool._pre_ping is False and 0 < engine.pool._recycle < 300
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            assert (
                conn.connection.dbapi_connection.prepare_threshold == 5
            )  # prepares allowed direct
        with neon_local.superuser() as su:  # the connection now sits idle in the client pool
            # waits for the backend to exit, so its goodbye is on the socket (a goodbye still
            # in flight is the residue no socket check sees)
            su.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        engine.dispose()


def test_without_pre_ping_the_killed_connection_is_handed_out(neon_local):
    engine = sqlalchemy.create_engine(_psycopg_url(neon_local.direct_url))
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with neon_local.superuser() as su:
            su.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with (
            pytest.raises(
                exc.OperationalError,
                match="terminating connection|server closed|consuming input failed",
            ),
            engine.connect() as conn,
        ):
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def _use_then_fork(engine, children=4):
    """Use ``engine`` in the parent, then in forked children; return what each child saw."""
    with engine.connect() as conn:  # the parent holds a pooled, open TLS connection
        conn.execute(text("SELECT 1"))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    processes = [ctx.Process(target=_child_query, args=(engine, queue)) for _ in range(children)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    return [queue.get(timeout=5) for _ in processes]


def _child_query(engine, queue):
    try:
        with engine.connect() as conn:
            for _ in range(20):
                conn.execute(text("SELECT count(*) FROM pg_class")).scalar()
        queue.put("ok")
    except Exception as e:  # reported to the parent
        queue.put(f"{type(e).__name__}: {e}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a threaded test process
def test_engine_used_before_fork_is_safe_in_children(neon_local):
    engine = neon_sqlalchemy.create_engine(env=neon_local.env(), direct=True)
    try:
        results = _use_then_fork(engine)
        assert results == ["ok"] * 4, results
        with engine.connect() as conn:  # and the parent's own connection still works
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_client_pool_on_the_pooler_is_refused_unless_allowed(neon_local):
    for kwargs in ({"pool_size": 5}, {"poolclass": QueuePool}, {"max_overflow": 2}):
        with pytest.raises(DoublePoolingError, match="double pooling") as info:
            neon_sqlalchemy.create_engine(env=neon_local.env(), **kwargs)
        assert neon_local.state.password not in str(info.value)
    with pytest.warns(neon_sqlalchemy.NeonClientPoolWarning):
        engine = neon_sqlalchemy.create_engine(env=neon_local.env(), allow_client_pool=True)
    try:
        assert isinstance(engine.pool, QueuePool) and engine.pool.size() == 2
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.prepare_threshold is None
    finally:
        engine.dispose()


def test_kwargs_pass_through_and_connect_args_merge(neon_local):
    engine = neon_sqlalchemy.create_engine(
        # the server alone: PgBouncer's URL alone (no pgbouncer=true) is refused a QueuePool
        sqlalchemy.engine.make_url(_psycopg_url(neon_local.direct_url)),
        echo=False,
        isolation_level="REPEATABLE READ",
        connect_args={"application_name": "neon-tests"},
    )
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT current_setting('application_name'), current_setting('transaction_isolation')"
                )
            ).one()
        assert tuple(row) == ("neon-tests", "repeatable read")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        (f"postgresql://u:{SECRET}/x@h/db", InvalidURLError, "unquoted"),
        (f"mysql://u:{SECRET}@h/db", InvalidURLError, "scheme 'mysql'"),
        (
            f"postgresql://u:{SECRET}@ep-a-1-pooler.us-east-2.aws.neon.tech/db?sslmode=disable",
            ValueError,
            "sslmode=disable",
        ),
    ],
)
def test_bad_urls_raise_our_error_without_the_password(url, error, match):
    with pytest.raises(error, match=match) as info:
        neon_sqlalchemy.create_engine(url)
    assert SECRET not in str(info.value)


def test_direct_needs_a_known_direct_endpoint():
    with pytest.raises(NoDirectEndpointError, match="pass direct_url"):
        neon_sqlalchemy.create_engine(
            "postgresql://u:p@bouncer:6432/db?pgbouncer=true", direct=True
        )


def test_retry_waits_out_a_paused_pooler(neon_local):
    import threading

    engine = neon_sqlalchemy.create_engine(env=neon_local.env())
    with neon_local.admin() as admin:
        admin.execute("PAUSE neondb")
        timer = threading.Timer(1.0, lambda: admin.execute("RESUME neondb"))
        timer.start()
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        finally:
            timer.join()
    engine.dispose()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        refused = neon_sqlalchemy.create_engine(
            "postgresql://u:p@127.0.0.1:1/db",
            retry=neon_sqlalchemy._engines.RetryPolicy(timeout=0.3, initial_delay=0.05),
        )
        with pytest.raises(exc.OperationalError) as info:
            refused.connect()
    assert "direct endpoint 127.0.0.1:1" in "\n".join(getattr(info.value.orig, "__notes__", []))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a threaded test process
def test_plain_engine_shares_its_socket_with_forked_children(neon_local):
    """The control: a plain engine's pooled TLS connection, inherited by four children."""
    engine = sqlalchemy.create_engine(_psycopg_url(neon_local.direct_url))
    try:
        results = _use_then_fork(engine)
    finally:
        engine.dispose()
    failures = [r for r in results if r != "ok"]
    assert failures, results
    assert all(
        re.search(r"SSL|bad record mac|decryption|EOF|unexpected|lost synchronization|closed", f)
        for f in failures
    ), failures


@pytest.mark.parametrize(
    ("driver", "connect_args"),
    [
        ("psycopg", {"prepare_threshold": 5}),
        ("asyncpg", {"statement_cache_size": 100}),
        ("asyncpg", {"prepared_statement_cache_size": 100}),
    ],
)
def test_connect_args_that_prepare_at_the_pooler_are_refused_unless_declared(
    neon_local, driver, connect_args
):
    with pytest.raises(ConfigurationError, match="prepared_statements=True") as info:
        neon_sqlalchemy.create_async_engine(
            env=neon_local.env(), driver=driver, connect_args=connect_args
        )
    assert neon_local.state.password not in str(info.value)
    declared = neon_sqlalchemy.create_async_engine(
        env=neon_local.env(), driver=driver, connect_args=connect_args, prepared_statements=True
    )
    direct = neon_sqlalchemy.create_async_engine(
        env=neon_local.env(), driver=driver, connect_args=connect_args, direct=True
    )  # a real session keeps its statements: nothing to declare
    for engine in (declared, direct):
        assert isinstance(engine, AsyncEngine)
        engine.sync_engine.dispose()


async def test_the_engine_url_holds_no_password_and_engines_still_connect(neon_local):
    """The password reaches the driver through connect_args only (masked in cparams)."""
    engine = neon_sqlalchemy.create_engine(env=neon_local.env())
    try:
        assert engine.url.password is None
        assert neon_local.state.password not in engine.url.render_as_string(hide_password=False)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    async_engine = neon_sqlalchemy.create_async_engine(env=neon_local.env(), driver="asyncpg")
    assert async_engine.url.password is None
    async with async_engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    await async_engine.dispose()
