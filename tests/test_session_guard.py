"""Session state never leaks through the transaction pooler.

The stand-in here has a PgBouncer pool of ONE server connection, so whatever session state a
statement leaves on the server meets the next client. Each unsafe statement is shown leaking
to a second client when sent without the guard (plain psycopg: the control), and stopped
before it is sent by both adapters; safe statements run through both. The classification
itself is checked on a corpus and on generated statements that only mention the keywords.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from django.db import connections, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

import neon_django
import neon_sqlalchemy
from neon_connect import SessionStateError
from neon_connect._session_guard import leak
from neon_local.standin import StandInState, running
from tests.guard_recipe import run_as_singleton, tenant_notes
from tests.helpers import django_alias

pytestmark = pytest.mark.integration

# (statement, probe run by a second client, the probe's answer when nothing leaked)
LEAKS = [
    ("SET search_path = tenant_b, public", "SHOW search_path", '"$user", public'),
    ("SET statement_timeout = 4321", "SHOW statement_timeout", "0"),
    ("set work_mem TO '77MB'", "SHOW work_mem", "4MB"),
    ("SELECT set_config('search_path', 'tenant_b', false)", "SHOW search_path", '"$user", public'),
    ("SELECT set_config('work_mem', '9MB', 'off')", "SHOW work_mem", "4MB"),
    ("SET default_transaction_read_only = on", "SHOW default_transaction_read_only", "off"),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SHOW default_transaction_read_only",
        "off",
    ),
    ("SET lock_timeout TO 1234", "SHOW lock_timeout", "0"),
    ("SET enable_seqscan = off", "SHOW enable_seqscan", "on"),
    ("PREPARE leaked AS SELECT 1", "SELECT count(*)::text FROM pg_prepared_statements", "0"),
    (
        "SELECT pg_advisory_lock(42)",
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory'",
        "0",
    ),
    (
        "SELECT pg_try_advisory_lock(43)",
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory'",
        "0",
    ),
    (
        "SELECT pg_advisory_lock_shared(44)",
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory'",
        "0",
    ),
    (
        "DECLARE held CURSOR WITH HOLD FOR SELECT 1",
        "SELECT count(*)::text FROM pg_cursors",
        "0",
    ),
    (
        "CREATE TEMP TABLE leaked_temp (a int)",
        "SELECT count(*)::text FROM pg_class WHERE relname = 'leaked_temp'",
        "0",
    ),
    (
        "CREATE TEMPORARY TABLE leaked_as AS SELECT 1 AS a",
        "SELECT count(*)::text FROM pg_class WHERE relname = 'leaked_as'",
        "0",
    ),
    ("LISTEN leaked_channel", "SELECT count(*)::text FROM pg_listening_channels()", "0"),
    ("SET ROLE guard_other", "SELECT current_user::text", "neondb_owner"),
    ("SELECT 1; SET search_path = tenant_b", "SHOW search_path", '"$user", public'),
]
UNSAFE = [statement for statement, _, _ in LEAKS] + [
    "SET SESSION search_path = a",
    "SET search_path TO a, b",
    "SET SESSION AUTHORIZATION neondb_owner",
    "SELECT pg_try_advisory_lock_shared(1)",
    "SELECT pg_advisory_lock(%s)",
    "SELECT pg_advisory_lock(hashtext(%(name)s))",
    "WITH x AS (SELECT pg_advisory_lock(1)) SELECT * FROM x",
    "SELECT set_config('a.b', 'c', FALSE)",
    "SELECT set_config('a.b', 'c', 'f')",
    "CREATE LOCAL TEMP TABLE t2 (a int)",
    "CREATE TEMP TABLE t3 (a int) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE t4 (a int) ON COMMIT PRESERVE ROWS",
    "DECLARE c2 BINARY CURSOR WITH HOLD FOR SELECT 1",
    "PREPARE q (int) AS SELECT $1",
    "  set search_path = x",
    "SET idle_in_transaction_session_timeout = 1000",
    "SET TIME ZONE 'UTC'; SET search_path = x",
    "SET random_page_cost = 1.1",
    "SET jit = off",
    "SET row_security = off",
    'SET search_path = "$user", public',
    "select PG_ADVISORY_LOCK(1)",
    "SELECT pg_catalog.pg_advisory_lock(1)",
]
SAFE = [
    "SELECT 1",
    "SET LOCAL search_path = tenant_b",
    "SET LOCAL statement_timeout = 1000",
    "SELECT set_config('search_path', 'tenant_b', true)",
    "SELECT set_config('a.b', 'c', %s)",
    "SET TIME ZONE 'UTC'",
    "SET timezone = 'Europe/Paris'",
    "SET client_encoding = 'UTF8'",
    "SET DateStyle = 'ISO, DMY'",
    "SET IntervalStyle = 'iso_8601'",
    "SET standard_conforming_strings = on",
    "SET application_name = 'worker'",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_try_advisory_xact_lock(1)",
    "SELECT pg_advisory_unlock_all()",
    "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
    "CREATE TABLE t (a int)",
    "NOTIFY channel, 'payload'",
    "SELECT pg_notify('channel', 'payload')",
    "DECLARE c CURSOR FOR SELECT 1",
    "DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1",
    "UNLISTEN *",
    "RESET ALL",
    "RESET search_path",
    "SET search_path TO DEFAULT",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET TRANSACTION READ ONLY",
    "SET CONSTRAINTS ALL IMMEDIATE",
    "DISCARD ALL",
    "UPDATE t SET x = 'SET search_path = a'",
    "UPDATE t SET a = 1 WHERE b = 'pg_advisory_lock(1)'",
    "SELECT 'LISTEN x; PREPARE y AS SELECT 1'",
    "SELECT 1 -- SET search_path = x",
    "SELECT 1 /* SELECT pg_advisory_lock(1) */",
    'SELECT "set_config" FROM t',
    'SELECT "pg_advisory_lock" FROM t',
    'CREATE TABLE "temp" ("set" int)',
    'INSERT INTO "listen" ("prepare") VALUES (%s)',
    "INSERT INTO t (a) VALUES (%(a)s) RETURNING id",
    "SELECT * FROM t WHERE a LIKE '%%set%%'",
    "WITH settings AS (SELECT 1) SELECT * FROM settings",
    "UPDATE settings SET value = %s WHERE key = %s",
    "DELETE FROM locks WHERE name = 'advisory_lock'",
    "CREATE INDEX CONCURRENTLY i ON t (a)",
    "CREATE UNIQUE INDEX i ON t (a)",
    "CREATE VIEW v AS SELECT 1",
    "CREATE SCHEMA tenant_b",
    "SELECT current_setting('search_path')",
    "SHOW search_path",
    "BEGIN",
    "COMMIT",
    "SAVEPOINT s1",
    "RELEASE SAVEPOINT s1",
    "ROLLBACK",
    "EXPLAIN SELECT 1",
    "SELECT count(*) FROM pg_locks",
    "COPY t FROM STDIN",
    "SELECT $1::int",
    "this is not SQL; at all",
    "",
]


def test_corpus_is_large_enough():
    assert len(UNSAFE) + len(SAFE) >= 100


@pytest.mark.parametrize("statement", UNSAFE)
def test_unsafe_statements_are_named(statement):
    assert leak(statement) is not None


@pytest.mark.parametrize("statement", SAFE)
def test_safe_statements_pass(statement):
    assert leak(statement) is None


_KEYWORDS = st.sampled_from(
    [
        "SET search_path = x",
        "pg_advisory_lock(1)",
        "set_config('a', 'b', false)",
        "LISTEN ch",
        "PREPARE p AS SELECT 1",
        "CREATE TEMP TABLE t (a int)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "SET ROLE x",
    ]
)
_NOISE = st.text(st.characters(blacklist_characters="'\"*/\n\x00", codec="utf-8"), max_size=20)


@settings(max_examples=200, deadline=None)
@given(keyword=_KEYWORDS, noise=_NOISE, shape=st.integers(0, 3))
def test_keywords_only_mentioned_are_not_stopped(keyword, noise, shape):
    """In a string, a comment or an identifier, the words do nothing."""
    quoted = (keyword + noise).replace("'", "''")
    identifier = (keyword + noise).replace('"', '""')
    statement = [
        f"UPDATE t SET x = '{quoted}'",
        f"SELECT 1 -- {keyword}{noise}",
        f"SELECT 1 /* {keyword}{noise} */",
        f'SELECT "{identifier}" FROM t',
    ][shape]
    assert leak(statement) is None, statement


# -- against a pooler with one server connection -------------------------------------------


@pytest.fixture(scope="module")
def one_server() -> Iterator[StandInState]:
    with running(pool_size=1, max_connections=10, proxy=False) as state:
        with psycopg.connect(state.superuser_url, autocommit=True) as su:
            su.execute("CREATE ROLE guard_other")
            su.execute("GRANT guard_other TO neondb_owner")
        with psycopg.connect(state.direct_url, autocommit=True) as owner:
            owner.execute("CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b")
            for schema in ("tenant_a", "tenant_b"):
                owner.execute(f"CREATE TABLE {schema}.notes (body text)")
                owner.execute(f"INSERT INTO {schema}.notes VALUES ('{schema}')")
        yield state


def _read(state: StandInState, probe: str) -> str:
    """What a second client of the pooler sees (the same, single server connection)."""
    with psycopg.connect(state.pooled_url, autocommit=True) as other:
        return str(other.execute(probe).fetchone()[0])


def _reset(state: StandInState) -> None:
    with psycopg.connect(state.pooled_url, autocommit=True) as conn:
        conn.execute("DISCARD ALL")


@pytest.mark.parametrize(("statement", "probe", "clean"), LEAKS)
def test_control_without_the_guard_the_state_reaches_the_next_client(
    one_server, statement, probe, clean
):
    try:
        with psycopg.connect(one_server.pooled_url, autocommit=True) as first:
            first.execute(statement)
        assert _read(one_server, probe) != clean  # leaked to a client that never asked
    finally:
        _reset(one_server)
    assert _read(one_server, probe) == clean


@pytest.fixture
def guarded_alias(one_server, django_db_blocker) -> Iterator[str]:
    settings_dict = neon_django.config(env=one_server.env(), conn_max_age=0)
    with django_alias("guarded", settings_dict), django_db_blocker.unblock():
        yield "guarded"


@pytest.mark.parametrize(("statement", "probe", "clean"), LEAKS)
def test_django_stops_it_before_it_is_sent(one_server, guarded_alias, statement, probe, clean):
    with connections[guarded_alias].cursor() as cursor, pytest.raises(SessionStateError) as e:
        cursor.execute(statement)
    assert "transaction pooler" in str(e.value) and guarded_alias in str(e.value)
    assert _read(one_server, probe) == clean


@pytest.mark.parametrize(("statement", "probe", "clean"), LEAKS)
def test_sqlalchemy_stops_it_before_it_is_sent(one_server, statement, probe, clean):
    engine = neon_sqlalchemy.create_engine(env=one_server.env())
    try:
        with pytest.raises(SessionStateError), engine.begin() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    assert _read(one_server, probe) == clean


RUNNABLE_SAFE = [
    "SET LOCAL search_path = tenant_b",
    "SELECT set_config('search_path', 'tenant_b', true)",
    "SET LOCAL statement_timeout = 1000",
    "SET application_name = 'worker'",
    "SET TIME ZONE 'UTC'",
    "SELECT pg_advisory_xact_lock(7)",
    "CREATE TEMP TABLE scratch (a int) ON COMMIT DROP",
    "NOTIFY channel, 'payload'",
    "SELECT pg_notify('channel', 'payload')",
    "DECLARE c CURSOR FOR SELECT 1",
    "SELECT 'SET search_path = x; LISTEN y'",
]


@pytest.mark.parametrize("statement", RUNNABLE_SAFE)
def test_safe_statements_run_through_both_adapters(one_server, guarded_alias, statement):
    with transaction.atomic(using=guarded_alias), connections[guarded_alias].cursor() as cursor:
        cursor.execute(statement)
    engine = neon_sqlalchemy.create_engine(env=one_server.env())
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement.replace("%", "%%"))
    finally:
        engine.dispose()
    assert _read(one_server, "SHOW search_path") == '"$user", public'


def test_multi_tenant_recipe_set_local_per_transaction(one_server, guarded_alias):
    """django-tenants style on the pooler: the schema is chosen per transaction."""
    seen = []
    for tenant in ("tenant_a", "tenant_b", "tenant_a"):
        seen += tenant_notes(tenant, using=guarded_alias)
        assert _read(one_server, "SHOW search_path") == '"$user", public'
    assert seen == [("tenant_a",), ("tenant_b",), ("tenant_a",)]
    with connections[
        guarded_alias
    ].cursor() as cursor:  # schema-qualified names need no search_path at all
        cursor.execute("SELECT body FROM tenant_b.notes")
        assert cursor.fetchone()[0] == "tenant_b"


def test_worker_recipe_holds_a_session_lock_on_the_direct_endpoint(one_server, guarded_alias):
    """The docs' worker recipe: the lock lives in a real session while the work runs, so a
    second worker is turned away; the same statement on the pooled endpoint is stopped before
    it is sent (the control)."""
    seen = []

    def work():
        with psycopg.connect(one_server.direct_url, autocommit=True) as other:
            taken = other.execute("SELECT pg_try_advisory_lock(4242)").fetchone()[0]
        seen.append(taken)

    assert run_as_singleton(4242, work, using=guarded_alias) is True
    assert seen == [False]  # held by the recipe's session while work() ran
    with pytest.raises(SessionStateError), connections[guarded_alias].cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [4242])


def test_direct_is_never_guarded(one_server, guarded_alias):
    with neon_django.direct(using=guarded_alias), connections[guarded_alias].cursor() as cursor:
        cursor.execute("SET search_path = tenant_b, public")
        cursor.execute("SELECT body FROM notes")
        assert cursor.fetchone()[0] == "tenant_b"
    engine = neon_sqlalchemy.create_engine(env=one_server.env(), direct=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET search_path = tenant_a, public")
    finally:
        engine.dispose()


def test_warn_logs_and_sends_off_sends(one_server, caplog):
    for mode in ("warn", "off"):
        engine = neon_sqlalchemy.create_engine(env=one_server.env(), session_guard=mode)
        caplog.clear()
        try:
            with (
                caplog.at_level(logging.WARNING, "neon_connect.session_guard"),
                engine.begin() as conn,
            ):
                conn.exec_driver_sql("SET work_mem = '11MB'")
            assert _read(one_server, "SHOW work_mem") == "11MB"
            assert ("outlives the transaction" in caplog.text) == (mode == "warn")
        finally:
            engine.dispose()
            _reset(one_server)


def test_a_bad_switch_names_itself(one_server):
    with pytest.raises(ValueError, match="session_guard"):
        neon_sqlalchemy.create_engine(env=one_server.env(), session_guard="strict")
    with pytest.raises(Exception, match="session_guard"):
        neon_django.config(env=one_server.env(), session_guard="strict")


# -- errors that mean something else behind the pooler -------------------------------------


def _notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


@pytest.fixture
def read_only_leaked(one_server) -> Iterator[None]:
    """Another client (no guard) left the single server connection read-only."""
    with psycopg.connect(one_server.pooled_url, autocommit=True) as other:
        other.execute("SET default_transaction_read_only = on")
    try:
        yield
    finally:
        _reset(one_server)


def test_sqlstate_25006_names_the_leak(one_server, guarded_alias, read_only_leaked):
    from django.db import DatabaseError

    with connections[guarded_alias].cursor() as cursor, pytest.raises(DatabaseError) as django:
        cursor.execute("CREATE TABLE IF NOT EXISTS written (a int)")
    assert "read-only transaction" in str(django.value)
    assert "SET default_transaction_read_only" in _notes(django.value)
    engine = neon_sqlalchemy.create_engine(env=one_server.env())
    try:
        with pytest.raises(Exception) as sa_error, engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS written (a int)")
    finally:
        engine.dispose()
    assert "SET default_transaction_read_only" in _notes(sa_error.value)


def test_control_sqlstate_25006_without_the_note_says_nothing_of_the_cause(
    one_server, read_only_leaked
):
    with (
        psycopg.connect(one_server.pooled_url, autocommit=True) as plain,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as error,
    ):
        plain.execute("CREATE TABLE IF NOT EXISTS written (a int)")
    assert "default_transaction_read_only" not in str(error.value) + _notes(error.value)


@pytest.mark.psycopg3_only  # psycopg2 reports PgBouncer's words only as a closed connection
def test_query_wait_timeout_names_the_cause(one_server, guarded_alias):
    with psycopg.connect(one_server.admin_url, autocommit=True) as admin:
        admin.execute("SET query_wait_timeout = 1")
    connections[guarded_alias].ensure_connection()  # connected before the pool is held
    try:
        with psycopg.connect(one_server.pooled_url) as holder:
            holder.execute("SELECT 1")  # holds the only server connection in a transaction
            with connections[guarded_alias].cursor() as cursor, pytest.raises(Exception) as e:
                cursor.execute("SELECT 1")
            holder.rollback()
    finally:
        connections[guarded_alias].close()
        with psycopg.connect(one_server.admin_url, autocommit=True) as admin:
            admin.execute("SET query_wait_timeout = 120")
    assert "query_wait_timeout" in str(e.value) + _notes(e.value)
    assert "stayed busy" in _notes(e.value)


@pytest.mark.parametrize("retry", [True, False], ids=["retry", "no-retry"])
def test_sqlalchemy_query_wait_timeout_names_the_cause(one_server, retry):
    """A first statement with values goes in one pipeline with BEGIN. BEGIN's answer is read
    first, so PgBouncer's query_wait_timeout comes in its own words, not as the closed
    connection psycopg's Pipeline object most often reported; with retrying on, the rerun
    sends it again with BEGIN alone and says the pooler stayed busy."""
    from neon_connect import RetryPolicy
    from neon_connect import _begin_with_first_statement as first_statement

    policy = RetryPolicy() if retry else RetryPolicy(timeout=0)
    engine = neon_sqlalchemy.create_engine(env=one_server.env(), retry=policy)
    with psycopg.connect(one_server.admin_url, autocommit=True) as admin:
        admin.execute("SET query_wait_timeout = 1")
    try:
        with psycopg.connect(one_server.pooled_url) as holder:
            holder.execute("SELECT 1")  # holds the only server connection in a transaction
            with pytest.raises(sa.exc.OperationalError) as e, engine.begin() as conn:
                conn.execute(sa.text("SELECT :x::int"), {"x": 1})
            holder.rollback()
    finally:
        engine.dispose()
        with psycopg.connect(one_server.admin_url, autocommit=True) as admin:
            admin.execute("SET query_wait_timeout = 120")
    error = e.value.orig
    if retry:
        assert "query_wait_timeout" in str(error), error
        assert "stayed busy" in _notes(e.value)
    else:  # BEGIN's answer is read before the close is: the pooler's own words, no guess
        assert "query_wait_timeout" in str(error), error
        assert first_statement.CLOSED_AT_FIRST not in _notes(error)


# -- the whole corpus through both adapters --------------------------------------------------


def _through_django(alias: str, statement: str) -> BaseException | None:
    from django.db import DatabaseError

    db = connections[alias]
    try:
        with db.cursor() as cursor:
            cursor.execute(statement)
    except (SessionStateError, DatabaseError) as error:
        return error
    finally:
        db.close()  # a fresh connection each time: BEGIN, COPY... leave none behind
    return None


def _through_sqlalchemy(engine, statement: str) -> BaseException | None:
    """As an app sends it: placeholders come with parameters."""
    params: Any = None
    if "%(" in statement:
        params = dict.fromkeys(re.findall(r"%\((\w+)\)s", statement), 1)
    elif "%s" in statement:
        params = (1,) * statement.count("%s")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement, params)
    except (SessionStateError, sa.exc.DBAPIError) as error:
        return error
    return None


@pytest.mark.parametrize("statement", UNSAFE)
def test_every_unsafe_statement_is_stopped_by_both_adapters(one_server, guarded_alias, statement):
    assert isinstance(_through_django(guarded_alias, statement), SessionStateError)
    engine = neon_sqlalchemy.create_engine(env=one_server.env())
    try:
        assert isinstance(_through_sqlalchemy(engine, statement), SessionStateError)
    finally:
        engine.dispose()


# ``COPY … FROM STDIN`` is classified above but not sent here: psycopg refuses it in
# ``execute()`` after the server entered COPY mode, and SQLAlchemy 2.0.16 (our lowest pin)
# with psycopg 3.2.1 then keeps the client connection open, holding this pool's one server
# connection for ``query_wait_timeout`` (plain SQLAlchemy does the same, without us).
SENDABLE_SAFE = [s for s in SAFE if s and not re.match(r"(?i)\s*COPY\b.*\bFROM\s+STDIN", s)]


@pytest.mark.parametrize("statement", SENDABLE_SAFE)
def test_every_safe_statement_reaches_the_server_through_both_adapters(
    one_server, guarded_alias, statement
):
    """It may fail there (a table that does not exist, a bad word): never at the guard."""
    assert not isinstance(_through_django(guarded_alias, statement), SessionStateError)
    engine = neon_sqlalchemy.create_engine(env=one_server.env())
    try:
        assert not isinstance(_through_sqlalchemy(engine, statement), SessionStateError)
    finally:
        engine.dispose()
    _reset(one_server)  # what the server kept of it (a table, a schema) is no leak, but goes
