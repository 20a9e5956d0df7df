"""``BEGIN`` sent in the first statement's message (issue 24): the transaction behaves as when
psycopg sends ``BEGIN`` alone, one round trip earlier. Round trips are counted in
tests/benchmarks/test_round_trips.py; here, what a transaction must still be."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import IntegrityError, transaction
from django.test.utils import CaptureQueriesContext

import neon_django
from neon_django.backend import _begin_with_first_statement as first_statement
from tests.helpers import django_alias

pytestmark = [pytest.mark.integration, pytest.mark.psycopg3_only]


@pytest.fixture
def table(neon_local) -> str:
    with psycopg.connect(neon_local.direct_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE IF NOT EXISTS bwf (k text PRIMARY KEY, n int)")
        owner.execute("TRUNCATE bwf")
        owner.execute("INSERT INTO bwf VALUES ('seed', 0)")
    return "bwf"


def _stored(neon_local) -> list[tuple[str, int]]:
    with psycopg.connect(neon_local.direct_url) as conn:
        return conn.execute("SELECT k, n FROM bwf ORDER BY k").fetchall()


@pytest.fixture
def db(neon_local, django_db_blocker, table) -> Iterator:
    with (
        django_db_blocker.unblock(),
        django_alias("bwf", neon_django.config(env=neon_local.env())) as db,
    ):
        yield db


def _merged(db) -> bool:
    db.ensure_connection()
    return db.connection.cursor_factory is first_statement.BeginWithFirstStatement


def test_the_first_statement_shows_its_own_rows_row_count_and_text(db):
    assert _merged(db)
    with CaptureQueriesContext(db) as queries, transaction.atomic(using="bwf"):
        with db.cursor() as cursor:
            cursor.execute("UPDATE bwf SET n = n + 1 WHERE k = %s", ["seed"])
            assert cursor.rowcount == 1
            cursor.execute("SELECT k, n FROM bwf")
            assert cursor.fetchall() == [("seed", 1)]
        assert db.connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    # Django's own BEGIN and COMMIT entries; the statement's text carries no BEGIN
    assert [q["sql"] for q in queries] == [
        "BEGIN",
        "UPDATE bwf SET n = n + 1 WHERE k = 'seed'",
        "SELECT k, n FROM bwf",
        "COMMIT",
    ]


def test_a_rollback_undoes_the_first_statement_too(db, neon_local):
    """The first statement ran inside the transaction, not before it in autocommit."""
    with pytest.raises(RuntimeError), transaction.atomic(using="bwf"):
        with db.cursor() as cursor:
            cursor.execute("INSERT INTO bwf VALUES (%s, 1)", ["first"])
            cursor.execute("INSERT INTO bwf VALUES (%s, 2)", ["second"])
        raise RuntimeError("roll it back")
    assert _stored(neon_local) == [("seed", 0)]
    with transaction.atomic(using="bwf"), db.cursor() as cursor:  # the connection goes on
        cursor.execute("INSERT INTO bwf VALUES (%s, 3)", ["after"])
    assert _stored(neon_local) == [("after", 3), ("seed", 0)]


def test_a_failing_first_statement_fails_its_transaction_and_nothing_else(db, neon_local):
    with pytest.raises(IntegrityError), transaction.atomic(using="bwf"), db.cursor() as cursor:
        cursor.execute("INSERT INTO bwf VALUES (%s, 1)", ["seed"])
    with db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bwf")
        assert cursor.fetchone() == (1,)
    assert db.get_autocommit() and db.connection.autocommit  # outside atomic() again


def test_the_isolation_level_and_percent_signs_reach_the_server(neon_local, django_db_blocker):
    settings = neon_django.config(
        env=neon_local.env(), options={"isolation_level": psycopg.IsolationLevel.SERIALIZABLE}
    )
    with django_db_blocker.unblock(), django_alias("bwf_iso", settings) as db:
        assert _merged(db)
        with transaction.atomic(using="bwf_iso"), db.cursor() as cursor:
            cursor.execute("SELECT current_setting('transaction_isolation'), %s || '%%'", ["a"])
            assert cursor.fetchone() == ("serializable", "a%")
        with transaction.atomic(using="bwf_iso"), db.cursor() as cursor:
            cursor.execute("SELECT '100%'")  # no parameters: the text goes as it is
            assert cursor.fetchone() == ("100%",)


def test_server_side_binding_keeps_psycopgs_own_begin(neon_local, django_db_blocker):
    settings = neon_django.config(env=neon_local.env(), options={"server_side_binding": True})
    with django_db_blocker.unblock(), django_alias("bwf_ssb", settings) as db:
        assert not _merged(db)
        with transaction.atomic(using="bwf_ssb"), db.cursor() as cursor:
            cursor.execute("SELECT %s::int", [1])
            assert cursor.fetchone() == (1,)


def test_a_syntax_error_first_still_fails_its_transaction(db, neon_local):
    """PostgreSQL refuses ``BEGIN; <unparsable>`` whole, before BEGIN runs: the statement is
    sent again as psycopg sends it, so the transaction is failed, as before, and a write the
    app makes after catching the error is not committed."""
    from django.db import DatabaseError

    with transaction.atomic(using="bwf"), db.cursor() as cursor:
        with pytest.raises(DatabaseError, match="syntax error"):
            cursor.execute("SELEC %s", [1])
        with pytest.raises(DatabaseError, match="current transaction is aborted"):
            cursor.execute("INSERT INTO bwf VALUES (%s, 9)", ["after"])
        db.set_rollback(True)
    assert _stored(neon_local) == [("seed", 0)]


def test_a_statement_that_commits_then_fails_is_never_sent_twice(db, neon_local):
    """A ``COMMIT`` inside the text leaves no transaction open after the error, as a syntax error
    does, but the insert ran: only a parser error is sent again (found by review)."""
    from django.db import DataError

    with pytest.raises(DataError), transaction.atomic(using="bwf"), db.cursor() as cursor:
        cursor.execute("INSERT INTO bwf VALUES ('once', 1); COMMIT; SELECT 1/0")
    assert _stored(neon_local) == [("once", 1), ("seed", 0)]


@pytest.mark.parametrize("empty", ["", "  ", "-- nothing", ";"])
def test_an_empty_first_statement_gives_psycopgs_empty_result(db, empty):
    """An empty statement gives no result of its own after ``BEGIN;``: it is sent again alone
    inside the transaction, so the cursor shows what psycopg's own path shows."""
    assert _merged(db)
    with transaction.atomic(using="bwf"), db.cursor() as cursor:
        cursor.execute(empty)
        assert cursor.cursor.statusmessage is None  # not BEGIN's
        assert cursor.cursor.pgresult.status == psycopg.pq.ExecStatus.EMPTY_QUERY
        assert db.connection.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def _refused(db, statement: str) -> psycopg.Error:
    from django.db import DatabaseError

    with transaction.atomic(using="bwf"), db.cursor() as cursor:
        with pytest.raises(DatabaseError) as info:
            cursor.execute(statement)
        with pytest.raises(DatabaseError, match="current transaction is aborted"):
            cursor.execute("INSERT INTO bwf VALUES (%s, 9)", ["after"])
        db.set_rollback(True)
    return info.value.__cause__


def test_an_error_at_analysis_points_into_the_statement_not_into_begin(db, neon_local):
    """An unknown column is refused after ``BEGIN`` ran: the statement is sent again psycopg's
    way, so its position and ``LINE 1:`` are its own, as without the merge."""
    assert _merged(db)
    error = _refused(db, "SELECT nope FROM bwf")
    assert error.diag.statement_position == "8"
    assert "LINE 1: SELECT nope FROM bwf" in str(error) and "BEGIN" not in str(error)
    assert _stored(neon_local) == [("seed", 0)]


def test_control_without_the_resend_the_position_counts_begin(db, monkeypatch):
    monkeypatch.setattr(first_statement, "only_begin_ran", lambda *args: False)
    error = _refused(db, "SELECT nope FROM bwf")
    assert error.diag.statement_position == "15" and "LINE 1: BEGIN; SELECT nope" in str(error)


def test_several_statements_refused_at_analysis_are_never_sent_twice(db, neon_local):
    """The first of two ran before the second was refused, so nothing is sent again: the
    sequence, which no rollback takes back, moved once."""

    def last() -> int:
        with psycopg.connect(neon_local.direct_url) as conn:
            conn.execute("CREATE SEQUENCE IF NOT EXISTS bwf_seq")
            return int(conn.execute("SELECT nextval('bwf_seq')").fetchone()[0])

    before = last()
    error = _refused(db, "SELECT nextval('bwf_seq'); SELECT nope FROM bwf")
    assert last() == before + 2  # one nextval in the refused text, one here
    assert "BEGIN" in str(error)  # the merged message's own error
