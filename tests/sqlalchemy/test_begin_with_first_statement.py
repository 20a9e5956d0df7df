"""SQLAlchemy on psycopg 3: ``BEGIN`` travels with a transaction's first statement (issue 24).

A first statement without values goes as ``BEGIN; <statement>``; one with values goes in one
pipeline with ``BEGIN``, its parameters bound on the server, either way (:data:`WAYS`). Round
trips are counted in tests/benchmarks/test_round_trips.py; here, what a transaction must still
be, and what a value must never become: SQL, a different type, or text in an error. An earlier
version wrote the first statement's values into its text, and the review's cases below failed
on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import exc, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import neon_sqlalchemy
from neon_connect import _begin_with_first_statement as first_statement

pytestmark = pytest.mark.integration

TABLE = """CREATE TABLE IF NOT EXISTS bwf_sa (
    id serial PRIMARY KEY, t text, i bigint, n numeric, f float8, b bool, d date,
    ts timestamptz, by bytea, j jsonb, a int[], u uuid)"""


WAYS = {"libpq pipeline": {}, "psycopg Pipeline": {"prepared_statements": True}}
"""The two ways a first statement with values goes with BEGIN: libpq's pipeline mode driven
directly (no prepares, the pooled endpoint's default), and psycopg's ``Pipeline`` object where
prepares are on (its statement cache)."""


THRESHOLDS = {"libpq pipeline": None, "psycopg Pipeline": 10**9}
""":data:`WAYS` on a bare psycopg connection: prepares off, or on and never due."""


@pytest.fixture(scope="module", params=list(WAYS))
def engine(neon_local, request):
    with psycopg.connect(neon_local.direct_url, autocommit=True) as owner:
        owner.execute(TABLE)
    engine = neon_sqlalchemy.create_engine(env=neon_local.env(), **WAYS[request.param])
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _empty(neon_local):
    with psycopg.connect(neon_local.direct_url, autocommit=True) as owner:
        owner.execute(TABLE)
        owner.execute("TRUNCATE bwf_sa")


def _merging(conn: sa.Connection) -> bool:
    driver = conn.connection.driver_connection
    return driver is not None and driver.cursor_factory is first_statement.BeginWithFirstStatement


def _stored(neon_local) -> list[tuple]:
    with psycopg.connect(neon_local.direct_url) as conn:
        return conn.execute("SELECT t, i FROM bwf_sa ORDER BY id").fetchall()


def test_the_first_statement_shows_its_own_rows_and_row_count(engine):
    insert = text("INSERT INTO bwf_sa (t, i) VALUES (:t, :i) RETURNING id, t")
    with engine.begin() as conn:
        assert _merging(conn)
        first = conn.execute(insert, {"t": "one", "i": 1})
        assert first.one()[1] == "one"  # the statement's rows, not BEGIN's
        second = conn.execute(insert, {"t": "two", "i": 2})
        assert second.rowcount == 1
        assert conn.connection.driver_connection.info.transaction_status == (
            psycopg.pq.TransactionStatus.INTRANS
        )


def test_a_rollback_undoes_the_first_statement_too(engine, neon_local):
    """The first statement ran inside the transaction, not before it in autocommit."""
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO bwf_sa (t, i) VALUES (:t, 1)"), {"t": "first"})
        raise RuntimeError("roll it back")
    assert _stored(neon_local) == []
    with engine.begin() as conn:  # the pooled connection goes on
        conn.execute(text("INSERT INTO bwf_sa (t, i) VALUES (:t, 2)"), {"t": "after"})
    assert _stored(neon_local) == [("after", 2)]


def test_a_failing_first_statement_fails_its_transaction_and_nothing_else(engine, neon_local):
    with pytest.raises(exc.ProgrammingError, match="no_such_column"), engine.begin() as conn:
        conn.execute(text("SELECT no_such_column FROM bwf_sa WHERE t = :t"), {"t": "x"})
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO bwf_sa (t, i) VALUES ('ok', 1)"))
        assert conn.execute(text("SELECT count(*) FROM bwf_sa")).scalar() == 1
    assert _stored(neon_local) == [("ok", 1)]


def test_the_isolation_level_and_percent_signs_reach_the_server(engine):
    with engine.connect().execution_options(isolation_level="SERIALIZABLE") as conn:
        level = conn.execute(text("SELECT current_setting('transaction_isolation')")).scalar()
        assert level == "serializable"
        conn.rollback()
        with conn.begin():
            row = conn.execute(text("SELECT '100%', :p"), {"p": "5%"}).one()
        assert tuple(row) == ("100%", "5%")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT '100%%'").scalar() == "100%"  # SQLAlchemy's rule


VALUES = {
    "t": "it's a \\ back'slash, 100% \u00e9\u4e2d\U0001f600",
    "i": -(2**62),
    "n": Decimal("12345678901234567890.000000001"),
    "f": float("inf"),
    "b": False,
    "d": dt.date(2026, 12, 5),
    "ts": dt.datetime(2026, 12, 5, 1, 2, 3, 456789, tzinfo=dt.timezone.utc),
    "by": b"\x00\x01\xff'\\",
    "j": {"k": ["v", 1, None, "it's"]},
    "a": [1, None, -3],
    "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
}
INSERT_ALL = sa.text(
    "INSERT INTO bwf_sa (t, i, n, f, b, d, ts, by, j, a, u) "
    "VALUES (:t, :i, :n, :f, :b, :d, :ts, :by, :j, :a, :u) RETURNING t, i, n, f, b, d, ts, by, j, a, u"
).bindparams(sa.bindparam("j", type_=JSONB))
SELECT_ALL = "SELECT t, i, n, f, b, d, ts, by, j, a, u FROM bwf_sa ORDER BY id"


def test_every_type_is_stored_as_psycopgs_own_path_stores_it(engine, neon_local):
    with engine.begin() as conn:
        conn.execute(INSERT_ALL, VALUES)  # with BEGIN
        conn.execute(INSERT_ALL, VALUES)  # alone
    with psycopg.connect(neon_local.direct_url) as plain:
        rows = plain.execute(SELECT_ALL).fetchall()
    assert rows[0] == rows[1]
    assert rows[0][8] == VALUES["j"] and bytes(rows[0][7]) == VALUES["by"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    t=st.text(st.characters(codec="utf-8", exclude_characters="\x00")),  # no surrogates
    i=st.integers(-(2**63), 2**63 - 1),
    n=st.decimals(allow_nan=False, allow_infinity=False, places=6),
    f=st.floats(allow_nan=False),
    by=st.binary(max_size=64),
)
def test_any_value_is_stored_as_the_server_bound_one(engine, neon_local, t, i, n, f, by):
    insert = text("INSERT INTO bwf_sa (t, i, n, f, by) VALUES (:t, :i, :n, :f, :by)")
    values = {"t": t, "i": i, "n": n, "f": f, "by": by}
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM bwf_sa"))  # with BEGIN: this one
        conn.execute(insert, values)  # alone
    with engine.begin() as conn:
        conn.execute(insert, values)  # with BEGIN
        pair = conn.execute(text("SELECT t, i, n, f, by FROM bwf_sa ORDER BY id")).all()
    assert pair[0] == pair[1]


def test_an_apps_own_cursor_factory_is_left_alone(neon_local):
    engine = neon_sqlalchemy.create_engine(
        env=neon_local.env(), connect_args={"cursor_factory": psycopg.ClientCursor}
    )
    try:
        with engine.begin() as conn:
            assert conn.connection.driver_connection.cursor_factory is psycopg.ClientCursor
            assert conn.execute(text("SELECT :x"), {"x": 1}).scalar() == 1
    finally:
        engine.dispose()


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bwf_sa"
    id: Mapped[int] = mapped_column(primary_key=True)
    t: Mapped[str | None]
    i: Mapped[int | None]


def test_the_orm_flushes_and_reads_in_one_transaction(engine, neon_local):
    with Session(engine) as session, session.begin():
        session.add_all([Row(t="orm", i=1), Row(t="orm", i=2)])
        session.flush()
        assert session.query(Row).filter_by(t="orm").count() == 2
    assert _stored(neon_local) == [("orm", 1), ("orm", 2)]


@pytest.mark.parametrize("way", list(WAYS))
def test_async_engines_send_begin_with_the_first_statement(neon_local, way):
    async def run() -> list[tuple]:
        engine = neon_sqlalchemy.create_async_engine(env=neon_local.env(), **WAYS[way])
        try:
            async with engine.begin() as conn:
                raw = await conn.get_raw_connection()
                factory = raw.driver_connection.cursor_factory
                assert factory is first_statement.AsyncBeginWithFirstStatement
                result = await conn.execute(
                    text("INSERT INTO bwf_sa (t, i) VALUES (:t, 1) RETURNING t"), {"t": "async"}
                )
                assert result.scalar() == "async"
                assert raw.driver_connection.info.transaction_status == (
                    psycopg.pq.TransactionStatus.INTRANS
                )
            with pytest.raises(RuntimeError):
                async with engine.begin() as conn:
                    await conn.execute(text("INSERT INTO bwf_sa (t, i) VALUES ('gone', 2)"))
                    raise RuntimeError("roll it back")
        finally:
            await engine.dispose()
        return _stored(neon_local)

    assert asyncio.run(run()) == [("async", 1)]


def _victims(neon_local) -> int:
    with psycopg.connect(neon_local.direct_url) as conn:
        return conn.execute("SELECT count(*) FROM bwf_sa").fetchone()[0]


def test_a_value_never_becomes_sql(engine, neon_local):
    """SQLAlchemy replaces ``:name`` in a comment too: a value written into the text would end
    the comment at its newline and run; bound on the server it is only a value."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO bwf_sa (t, i) VALUES ('victim', 1)"))
    evil = "\n; DELETE FROM bwf_sa; SELECT $q$ --"
    with engine.begin() as conn:
        found = conn.execute(text("SELECT t FROM bwf_sa -- by :t\n WHERE t = :t"), {"t": evil})
        assert found.all() == []
    multiple = pytest.raises(exc.ProgrammingError, match="cannot insert multiple commands")
    with multiple, engine.begin() as conn:
        conn.execute(text("SELECT 1; DELETE FROM bwf_sa WHERE t <> :t"), {"t": evil})
    assert _victims(neon_local) == 1


def test_values_keep_their_types_and_stay_out_of_errors(engine):
    with engine.begin() as conn:
        kind = conn.execute(
            text("SELECT pg_typeof(:f)::text, CAST(:h AS INTEGER)"), {"f": 0.1, "h": 2.5}
        )
        assert tuple(kind.one()) == ("double precision", 2)  # a float, not numeric 2.5 -> 3
    secret = "hunter2-in-a-parameter"
    with pytest.raises(exc.ProgrammingError) as info, engine.begin() as conn:
        conn.execute(
            text("SELECT t FROM bwf_sa WHERE t = :t AND no_such_column = 1"), {"t": secret}
        )
    assert secret not in str(info.value.orig)


@pytest.mark.parametrize("values", [{"x": 1}, None])
def test_a_syntax_error_first_still_fails_its_transaction(engine, neon_local, values):
    """PostgreSQL refuses ``BEGIN; <unparsable>`` whole, before BEGIN runs; the statement is
    sent again as psycopg sends it, so the transaction is failed as before, and a write the
    app makes after catching the error is not committed."""
    with engine.connect() as conn, conn.begin():
        with pytest.raises(exc.ProgrammingError, match="syntax error"):
            if values is None:
                conn.exec_driver_sql("SELEC 1")
            else:
                conn.execute(text("SELEC :x"), values)
        with pytest.raises(exc.InternalError, match="current transaction is aborted"):
            conn.execute(text("INSERT INTO bwf_sa (t, i) VALUES ('after', 1)"))
    assert _stored(neon_local) == []


def test_an_error_at_analysis_points_into_the_statement_not_into_begin(
    engine, neon_local, monkeypatch
):
    """An unknown column is refused after ``BEGIN`` ran: the statement is sent again psycopg's
    way, so its position and ``LINE 1:`` are its own (the control, without that, counts
    ``BEGIN; ``). Sync and async engines."""

    def refused() -> psycopg.Error:
        with engine.connect() as conn, conn.begin():
            assert _merging(conn)
            with pytest.raises(exc.ProgrammingError) as info:
                conn.exec_driver_sql("SELECT nope FROM bwf_sa")
        return info.value.orig

    async def refused_async() -> psycopg.Error:
        made = neon_sqlalchemy.create_async_engine(env=neon_local.env())
        try:
            async with made.connect() as conn, conn.begin():
                with pytest.raises(exc.ProgrammingError) as info:
                    await conn.exec_driver_sql("SELECT nope FROM bwf_sa")
            return info.value.orig
        finally:
            await made.dispose()

    for error in (refused(), asyncio.run(refused_async())):
        assert error.diag.statement_position == "8"
        assert "LINE 1: SELECT nope FROM bwf_sa" in str(error) and "BEGIN" not in str(error)
    monkeypatch.setattr(first_statement, "only_begin_ran", lambda *args: False)
    assert refused().diag.statement_position == "15"


def test_statements_without_values_may_be_several(engine, neon_local):
    """Sent as one simple-protocol message, as psycopg sends a statement without values."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO bwf_sa (t, i) VALUES ('a', 1); INSERT INTO bwf_sa (t, i) VALUES ('b', 2)"
            )
        )
    assert _stored(neon_local) == [("a", 1), ("b", 2)]


def test_a_statement_that_commits_then_fails_is_never_sent_twice(engine, neon_local):
    """A ``COMMIT`` inside the text ends BEGIN's transaction before the error: no transaction is
    open afterwards, as after a syntax error, but the insert ran and committed. Sending the
    text again stored it twice (found by review); only a parser error is sent again."""
    with engine.connect() as conn, pytest.raises(exc.DataError, match="division by zero"):
        conn.exec_driver_sql("INSERT INTO bwf_sa (t, i) VALUES ('once', 1); COMMIT; SELECT 1/0")
    assert _stored(neon_local) == [("once", 1)]


@pytest.mark.parametrize("empty", ["", "  ", "-- nothing", ";"])
def test_an_empty_first_statement_gives_psycopgs_empty_result(engine, empty):
    """An empty statement gives no result of its own after ``BEGIN;``: it is sent again alone
    inside the transaction, so the cursor shows what psycopg's own path shows."""
    with engine.begin() as conn:
        assert _merging(conn)
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute(empty)
        assert cursor.statusmessage is None  # not BEGIN's
        assert cursor.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY
        assert conn.connection.driver_connection.info.transaction_status == (
            psycopg.pq.TransactionStatus.INTRANS
        )


@pytest.mark.parametrize("way", list(THRESHOLDS))
def test_a_connection_lost_at_the_first_statement_is_never_left_in_pipeline_mode(neon_local, way):
    """The server ends the session before the first statement: the error is marked as the
    merge's (the rerun may treat it as any first statement's), and the connection reads as
    lost, so a pool replaces it, instead of refusing every later statement from inside a
    pipeline. Driving libpq directly, BEGIN's answer is read first: the server's own words."""
    from neon_connect._retry import MERGED_PIPELINE, connection_lost, in_pipeline

    conn = psycopg.connect(
        neon_local.direct_url,
        prepare_threshold=THRESHOLDS[way],
        cursor_factory=first_statement.BeginWithFirstStatement,
    )
    with psycopg.connect(neon_local.direct_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError) as e:
        conn.execute("SELECT %(x)s::int", {"x": 1})
    assert getattr(e.value, MERGED_PIPELINE, False)
    assert connection_lost(conn) and not in_pipeline(conn, e.value)
    if way == "libpq pipeline":  # psycopg's Pipeline reports the closed connection
        assert isinstance(e.value, psycopg.errors.AdminShutdown), e.value
    conn.close()


# -- against psycopg's own execute, where the merge must step aside or match it ---------------


def _outcome(conn: psycopg.Connection, query, params) -> tuple:
    """What a caller sees of a first statement: its rows, or its error's class; then the
    transaction's status and whether the connection is still open."""
    try:
        cursor = conn.execute(query, params)
        seen: object = cursor.fetchall()
    except psycopg.Error as error:
        seen = type(error).__name__
    status = None if conn.closed else conn.info.transaction_status.name
    return seen, status, conn.closed


SIMPLE_PROTOCOL = {
    "Composed, several statements": (
        psycopg.sql.SQL("SELECT 1; SELECT {}").format(psycopg.sql.Literal(2)),
        None,
    ),
    "bytes, several statements": (b"SELECT 1; SELECT 2", None),
    "values that no placeholder takes": ("SELECT 1; SELECT 2", {"unused": 1}),
    "more values than libpq sends": (
        "SELECT " + ", ".join(["%s"] * 65536),
        [1] * 65536,
    ),
}


@pytest.mark.parametrize("way", list(THRESHOLDS))
@pytest.mark.parametrize("case", list(SIMPLE_PROTOCOL))
def test_where_psycopg_would_not_bind_values_the_merge_steps_aside(neon_local, case, way):
    """psycopg sends a statement with no values in the simple protocol, which may carry
    several statements, and refuses more values than libpq takes before sending anything but
    BEGIN. The merge's pipeline would have forced the extended protocol (several statements:
    a syntax error) or closed a healthy connection; it now leaves both to psycopg."""
    query, params = SIMPLE_PROTOCOL[case]
    seen = []
    for factory in (psycopg.Cursor, first_statement.BeginWithFirstStatement):
        with psycopg.connect(
            neon_local.pooled_url, prepare_threshold=THRESHOLDS[way], cursor_factory=factory
        ) as conn:
            seen.append(_outcome(conn, query, params))
    assert seen[1] == seen[0], seen


def test_a_backend_ended_by_the_first_statement_gives_the_servers_error(neon_local):
    """The backend ends while the statement runs (an admin's pg_terminate_backend, a
    shutdown): the server's own error, not "consuming input failed". psycopg's own cursor
    gives one or the other, by version (3.3 the server's, 3.2.1 the closed connection's)."""
    statement = "SELECT pg_terminate_backend(pg_backend_pid()) AND %s"
    seen = []
    for factory in (psycopg.Cursor, first_statement.BeginWithFirstStatement):
        conn = psycopg.connect(
            neon_local.direct_url, prepare_threshold=None, cursor_factory=factory
        )
        seen.append(_outcome(conn, statement, [True]))
        conn.close()
    (plain, _, plain_closed), (merged, _, merged_closed) = seen
    assert plain in ("AdminShutdown", "OperationalError"), seen
    assert merged == "AdminShutdown", seen
    assert plain_closed == merged_closed, seen


def _async_outcomes(url: str, scenario) -> list:
    async def run() -> list:
        seen = []
        for factory in (psycopg.AsyncCursor, first_statement.AsyncBeginWithFirstStatement):
            conn = await psycopg.AsyncConnection.connect(
                url, prepare_threshold=None, cursor_factory=factory
            )
            try:
                seen.append(await scenario(conn))
            finally:
                await conn.close()
        return seen

    return asyncio.run(run())


async def _hold_the_lock(conn, seconds: float) -> None:
    """psycopg's notifies() holds the connection's lock while it waits."""
    async for _ in conn.notifies(timeout=seconds):
        pass


def test_a_task_cancelled_waiting_for_the_connection_leaves_it_alone(neon_local):
    """A task times out waiting for the connection's lock while another task's first
    statement runs on it: only the waiting task fails, as with psycopg's own cursor."""

    async def scenario(conn) -> tuple:
        async def running():
            await asyncio.sleep(0.1)
            cursor = await conn.cursor().execute("SELECT pg_sleep(%s)::text || 'done'", [1])
            return await cursor.fetchone()

        async def waiting():
            await asyncio.sleep(0.1)
            return await asyncio.wait_for(conn.cursor().execute("SELECT %s::int", [2]), 1.5)

        held, done, timed_out = await asyncio.gather(
            _hold_the_lock(conn, 1.0), running(), waiting(), return_exceptions=True
        )
        return done, type(timed_out).__name__, conn.closed

    plain, merged = _async_outcomes(neon_local.pooled_url, scenario)
    assert plain == (("done",), "TimeoutError", False), plain
    assert merged == plain


def test_autocommit_turned_on_while_a_statement_waits_is_kept(neon_local):
    """Another task turns autocommit on while this task's statement waits for the lock: the
    statement runs in autocommit, as psycopg decides under the lock, and the setting stays."""

    async def scenario(conn) -> tuple:
        async def turn_on():
            await asyncio.sleep(0.1)
            await conn.set_autocommit(True)

        async def statement():
            await asyncio.sleep(0.2)
            return await (await conn.cursor().execute("SELECT %s::int", [1])).fetchone()

        _, _, row = await asyncio.gather(_hold_the_lock(conn, 0.5), turn_on(), statement())
        return row, conn.autocommit, conn.info.transaction_status.name

    plain, merged = _async_outcomes(neon_local.pooled_url, scenario)
    assert plain == ((1,), True, "IDLE"), plain
    assert merged == plain
