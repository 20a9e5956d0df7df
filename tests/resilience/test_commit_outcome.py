"""Issue 12's second finding: a COMMIT cut by a dying pooler or server has no known outcome.

A deferred trigger makes each COMMIT take 1 s, so a fault lands inside it. Killing PgBouncer
there gives the caller an ordinary connection error for a transaction that was stored; a
terminated backend gives psycopg's ``received 2 results from command 'COMMIT'``. The library's
:func:`neon_connect._commit_outcome.commit` says "outcome unknown" for both, and leaves a refusal
by a live server (a definite rollback) unchanged.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import uuid

import psycopg
import pytest
import sqlalchemy

import neon_sqlalchemy
from neon_connect._commit_outcome import CommitNotSent, CommitOutcomeUnknown, acommit, commit
from tests.resilience import SLOW_COMMIT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slow(standin):
    with psycopg.connect(standin.direct_url, autocommit=True) as conn:
        conn.execute(SLOW_COMMIT)


def _stored(standin, key: str) -> int:
    """The rows stored for ``key`` once no COMMIT is still running on the server."""
    for _ in range(100):  # bounded: the server may be coming back, a COMMIT may still run
        try:
            with psycopg.connect(standin.superuser_url, connect_timeout=2) as su:
                running = su.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query = 'COMMIT'"
                ).fetchone()[0]  # type: ignore[index]
            if running == 0:
                with psycopg.connect(standin.direct_url, connect_timeout=2) as conn:
                    row = conn.execute("SELECT count(*) FROM slow_commits WHERE k = %s", (key,))
                    return int(row.fetchone()[0])  # type: ignore[index]
        except psycopg.OperationalError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not settle")


def _commit_during(standin, fault, committer) -> tuple[BaseException, str]:
    key = uuid.uuid4().hex
    conn = psycopg.connect(standin.pooled_url)
    conn.execute("INSERT INTO slow_commits VALUES (%s)", (key,))
    timer = threading.Timer(0.3, fault)
    timer.start()
    try:
        with pytest.raises(psycopg.Error) as info:
            committer(conn)
    finally:
        timer.join()
        conn.close()
    return info.value, key


def test_pooler_killed_during_commit_the_write_landed_and_the_caller_is_told_unknown(
    standin, faults, slow
):
    error, key = _commit_during(standin, lambda: faults.restart_pooler(down_for=0.1), commit)
    assert isinstance(error, CommitOutcomeUnknown)
    assert isinstance(error, psycopg.OperationalError)  # callers' existing handlers still match
    assert "may or may not be committed" in str(error)
    assert "eof" in str(error.__cause__).lower() or "closed" in str(error.__cause__).lower()
    assert _stored(standin, key) == 1  # the error was not a rollback: that is the ambiguity


def test_control_the_driver_alone_reports_that_commit_as_a_plain_connection_error(
    standin, faults, slow
):
    error, key = _commit_during(
        standin, lambda: faults.restart_pooler(down_for=0.1), lambda c: c.commit()
    )
    assert type(error) is psycopg.OperationalError  # reads like "it failed"...
    assert _stored(standin, key) == 1  # ...yet it was committed


def _terminated_in_the_transaction(standin, faults) -> tuple[psycopg.Connection, str]:
    """A pooled connection inside a transaction whose backend was then terminated (a
    suspend): PgBouncer relays the FATAL and closes the client before COMMIT is sent."""
    key = uuid.uuid4().hex
    conn = psycopg.connect(standin.pooled_url)
    conn.execute("INSERT INTO slow_commits VALUES (%s)", (key,))
    assert faults.suspend() >= 1
    time.sleep(0.2)
    return conn, key


def test_a_transaction_ended_before_commit_is_sent_is_reported_not_stored(standin, faults, slow):
    """The socket shows the end before COMMIT is sent: a certain outcome, safe to run again
    (it was reported as "may or may not be committed")."""
    conn, key = _terminated_in_the_transaction(standin, faults)
    with conn, pytest.raises(CommitNotSent) as info:
        commit(conn)
    assert not isinstance(info.value, CommitOutcomeUnknown)
    assert "nothing of the transaction was stored" in str(info.value)
    assert _stored(standin, key) == 0


def test_control_the_driver_alone_sends_that_commit_and_hides_the_cause(standin, faults, slow):
    """psycopg 3.3 hides the server's FATAL behind "received 2 results"; 3.2 reports the
    crash itself. Either way the driver's error alone does not say what became of COMMIT."""
    conn, key = _terminated_in_the_transaction(standin, faults)
    with conn, pytest.raises(psycopg.Error) as info:
        conn.commit()
    assert any(
        text in str(info.value)
        for text in ("received 2 results from command 'COMMIT'", "server conn crashed")
    ), info.value
    assert _stored(standin, key) == 0


async def test_async_commit_cut_by_a_suspend_is_unknown(standin, faults, slow):
    key = uuid.uuid4().hex
    conn = await psycopg.AsyncConnection.connect(standin.pooled_url)
    await conn.execute("INSERT INTO slow_commits VALUES (%s)", (key,))
    timer = threading.Timer(0.3, faults.suspend)  # inside the 1 s COMMIT
    timer.start()
    try:
        with pytest.raises(CommitOutcomeUnknown):
            await acommit(conn)
    finally:
        timer.join()
        await conn.close()


async def test_async_commit_of_a_transaction_ended_before_commit_is_sent(standin, faults, slow):
    key = uuid.uuid4().hex
    conn = await psycopg.AsyncConnection.connect(standin.pooled_url)
    try:
        await conn.execute("INSERT INTO slow_commits VALUES (%s)", (key,))
        assert faults.suspend() >= 1
        await asyncio.sleep(0.2)
        with pytest.raises(CommitNotSent, match="nothing of the transaction was stored"):
            await acommit(conn)
    finally:
        await conn.close()
    assert _stored(standin, key) == 0


def test_a_commit_refused_by_a_live_server_is_a_definite_rollback_and_unchanged(standin):
    with psycopg.connect(standin.pooled_url) as conn:
        conn.execute("INSERT INTO deferred_unique VALUES (1), (1)")
        with pytest.raises(psycopg.errors.UniqueViolation) as info:
            commit(conn)
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert not conn.broken


# -- the adapters: SQLAlchemy's engines say it too --------------------------------------------


def _sqlalchemy_commit_during(standin, faults, engine) -> tuple[BaseException, str]:
    key = uuid.uuid4().hex
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO slow_commits VALUES (:k)"), {"k": key})
        timer = threading.Timer(0.3, lambda: faults.restart_pooler(down_for=0.1))
        timer.start()
        try:
            with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
                conn.commit()
        finally:
            timer.join()
    engine.dispose()
    return info.value, key


def test_sqlalchemy_engine_says_the_commit_outcome_is_unknown(standin, faults, slow):
    engine = neon_sqlalchemy.create_engine(env=standin.env())
    error, key = _sqlalchemy_commit_during(standin, faults, engine)
    assert isinstance(error, sqlalchemy.exc.OperationalError)  # existing handlers still match
    assert isinstance(error.orig, CommitOutcomeUnknown)
    assert "may or may not be committed" in str(error) and "before retrying" in str(error)
    assert _stored(standin, key) == 1  # it was stored although the caller got an error


def test_control_a_plain_engine_reports_the_driver_error_as_if_it_failed(standin, faults, slow):
    engine = sqlalchemy.create_engine(
        standin.pooled_url.replace("postgresql://", "postgresql+psycopg://", 1),
        poolclass=sqlalchemy.pool.NullPool,
    )
    error, key = _sqlalchemy_commit_during(standin, faults, engine)
    assert type(error.orig) is psycopg.OperationalError  # nothing says "maybe committed"
    assert "may or may not" not in str(error)
    assert _stored(standin, key) == 1


def test_sqlalchemy_a_transaction_ended_before_commit_is_reported_not_stored(standin, faults, slow):
    engine = neon_sqlalchemy.create_engine(env=standin.env())
    key = uuid.uuid4().hex
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO slow_commits VALUES (:k)"), {"k": key})
        assert faults.suspend() >= 1
        time.sleep(0.2)
        with pytest.raises(sqlalchemy.exc.OperationalError) as info:
            conn.commit()
    assert isinstance(info.value.orig, CommitNotSent)
    assert "nothing of the transaction was stored" in str(info.value)
    assert info.value.connection_invalidated  # the pool drops it
    engine.dispose()
    assert _stored(standin, key) == 0


def test_sqlalchemy_a_commit_refused_by_a_live_server_is_left_alone(standin, slow):
    engine = neon_sqlalchemy.create_engine(env=standin.env())
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("INSERT INTO deferred_unique VALUES (1), (1)"))
        with pytest.raises(sqlalchemy.exc.IntegrityError) as refused:
            conn.commit()
        assert not isinstance(refused.value.orig, CommitOutcomeUnknown)
        conn.rollback()
        conn.execute(sqlalchemy.text("SELECT 1"))
        conn.commit()
    engine.dispose()


def test_sqlalchemy_ctrl_c_during_commit_reaches_the_caller_as_it_was(standin, slow):
    """KeyboardInterrupt (or a worker's SystemExit) while COMMIT waits stays what it was, so
    ``except KeyboardInterrupt`` catches it and SQLAlchemy invalidates the connection. The
    COMMIT's error mark once turned it into ``TypeError`` (no weak reference to a built-in
    exception). The alarm lands inside the 1 s deferred trigger."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    engine = neon_sqlalchemy.create_engine(env=standin.env())
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), engine.connect() as conn:
            conn.execute(sqlalchemy.text("INSERT INTO slow_commits VALUES ('ctrl-c')"))
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            conn.commit()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        engine.dispose()


async def test_sqlalchemy_async_engine_says_the_commit_outcome_is_unknown(standin, faults, slow):
    engine = neon_sqlalchemy.create_async_engine(env=standin.env())
    key = uuid.uuid4().hex
    timer = threading.Timer(0.3, faults.suspend)  # inside the 1 s COMMIT
    async with engine.connect() as conn:
        await conn.execute(sqlalchemy.text("INSERT INTO slow_commits VALUES (:k)"), {"k": key})
        timer.start()
        with pytest.raises(sqlalchemy.exc.OperationalError) as info:
            await conn.commit()
    timer.join()
    await engine.dispose()
    assert isinstance(info.value.orig, CommitOutcomeUnknown)
    assert _stored(standin, key) == 0


async def test_sqlalchemy_async_engine_a_transaction_ended_before_commit_is_not_stored(
    standin, faults, slow
):
    engine = neon_sqlalchemy.create_async_engine(env=standin.env())
    key = uuid.uuid4().hex
    async with engine.connect() as conn:
        await conn.execute(sqlalchemy.text("INSERT INTO slow_commits VALUES (:k)"), {"k": key})
        assert faults.suspend() >= 1
        await asyncio.sleep(0.2)
        with pytest.raises(sqlalchemy.exc.OperationalError) as info:
            await conn.commit()
    await engine.dispose()
    assert isinstance(info.value.orig, CommitNotSent)
    assert "nothing of the transaction was stored" in str(info.value)
    assert _stored(standin, key) == 0


def test_sqlalchemy_a_failed_rollback_after_a_commit_is_not_called_a_commit(standin, faults):
    """The COMMIT mark belongs to its transaction: a later failure with no statement (here a
    ROLLBACK on a connection the server ended) is reported as the driver's error."""
    engine = neon_sqlalchemy.create_engine(env=standin.env())
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT 1"))
        conn.commit()
        conn.execute(sqlalchemy.text("SELECT 1"))  # a new transaction
        assert faults.suspend() >= 1
        time.sleep(0.2)
        with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
            conn.rollback()
    assert not isinstance(info.value.orig, CommitOutcomeUnknown), info.value
    engine.dispose()
