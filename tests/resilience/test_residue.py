"""The residue of the liveness check (issue 21): a kept connection to the pooler that dies
between the check and a transaction's first statement.

The check at each use sees a connection that closed while it sat idle. One that dies after
the check, as the statement leaves, is seen only by the statement's error. If that statement
was the first of an explicit transaction, nothing of the transaction can have committed, and
a pooler connection holds no session: the adapters send it once more on a new connection.
In autocommit they never do (the statement may have run).

The connection dies for real: its socket is shut down, as a network cut or a pooler killed
mid-flight would leave it, right before the statement is sent.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from django.db import connections, transaction
from django.db.utils import DatabaseError, OperationalError

import neon_django
import neon_sqlalchemy
from neon_connect import _liveness as liveness_module
from neon_django.backend import _cursors as cursors
from neon_local.standin import StandInState, running
from tests.helpers import django_alias

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own() -> Iterator[StandInState]:
    with running(pool_size=3, max_connections=20, proxy=False) as state:
        with psycopg.connect(state.direct_url, autocommit=True) as owner:
            owner.execute("CREATE TABLE residue (key text)")
        yield state


def _cut(fileno: int) -> None:
    """Shut the connection's socket down in both directions (the driver's fd stays open)."""
    with socket.socket(fileno=os.dup(fileno)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def _stored(state: StandInState, key: str) -> int:
    with psycopg.connect(state.direct_url) as conn:
        return int(conn.execute("SELECT count(*) FROM residue WHERE key = %s", [key]).fetchone()[0])


@pytest.fixture
def alias(own, django_db_blocker) -> Iterator[str]:
    settings = neon_django.config(env=own.env(), conn_max_age=60)
    with django_alias("residue", settings), django_db_blocker.unblock():
        yield "residue"


def _cut_before_first_statement(alias: str):
    """An execute wrapper that cuts the connection once, after the liveness check."""
    cut = []

    def wrapper(execute, sql, params, many, context):
        if not cut:
            cut.append(sql)
            _cut(connections[alias].connection.fileno())
        return execute(sql, params, many, context)

    return wrapper


def test_django_sends_a_transactions_first_statement_again_on_a_new_connection(own, alias):
    db = connections[alias]
    db.ensure_connection()
    with (
        db.execute_wrapper(_cut_before_first_statement(alias)),
        transaction.atomic(using=alias),
        db.cursor() as cursor,
    ):
        cursor.execute("INSERT INTO residue VALUES ('django-atomic')")
        cursor.execute("INSERT INTO residue VALUES ('django-atomic')")
    assert _stored(own, "django-atomic") == 2  # the block committed whole, once


def _leave_a_command_in_progress(alias: str) -> None:
    """The state a worker's connection was found in after a pooler restart (psycopg 3.2.1):
    libpq holds a command in progress, so it refuses to send anything more."""
    connections[alias].connection.pgconn.send_query(b"SELECT 1")


@pytest.mark.psycopg3_only
def test_django_replaces_a_kept_connection_left_with_a_command_in_progress(own, alias):
    db = connections[alias]
    db.ensure_connection()
    _leave_a_command_in_progress(alias)
    with transaction.atomic(using=alias), db.cursor() as cursor:
        cursor.execute("INSERT INTO residue VALUES ('django-busy')")
    assert _stored(own, "django-busy") == 1


@pytest.mark.psycopg3_only
def test_control_without_that_check_libpq_refuses_every_statement(own, alias, monkeypatch):
    monkeypatch.setattr(liveness_module, "_ACTIVE", -1)  # the check as it was
    db = connections[alias]
    db.ensure_connection()
    _leave_a_command_in_progress(alias)
    with (
        # psycopg 3.2 refuses the statement, 3.3 already the switch out of autocommit
        pytest.raises(DatabaseError, match="another command is already in progress|status ACTIVE"),
        transaction.atomic(using=alias),
        db.cursor() as cursor,
    ):
        cursor.execute("INSERT INTO residue VALUES ('django-busy-unfixed')")
    db.close()
    assert _stored(own, "django-busy-unfixed") == 0


def test_control_django_in_autocommit_never_sends_it_again(own, alias):
    db = connections[alias]
    db.ensure_connection()
    with (
        db.execute_wrapper(_cut_before_first_statement(alias)),
        pytest.raises(OperationalError),
        db.cursor() as cursor,
    ):
        cursor.execute("INSERT INTO residue VALUES ('django-autocommit')")
    assert _stored(own, "django-autocommit") == 0


def test_control_django_without_the_rerun_the_transaction_fails(own, alias, monkeypatch):
    monkeypatch.setattr(cursors, "opens_transaction", lambda connection: False)
    db = connections[alias]
    db.ensure_connection()
    with (
        db.execute_wrapper(_cut_before_first_statement(alias)),
        pytest.raises(OperationalError),
        transaction.atomic(using=alias),
        db.cursor() as cursor,
    ):
        cursor.execute("INSERT INTO residue VALUES ('django-unfixed')")
    assert _stored(own, "django-unfixed") == 0


def test_django_on_direct_reports_the_ended_session_instead(own, alias):
    """direct() may hold a session (LISTEN, locks): it is never swapped silently."""
    with neon_django.direct(alias):
        db = connections[alias]
        db.ensure_connection()
        with (
            db.execute_wrapper(_cut_before_first_statement(alias)),
            pytest.raises(OperationalError),
            transaction.atomic(using=alias),
            db.cursor() as cursor,
        ):
            cursor.execute("INSERT INTO residue VALUES ('django-direct')")
        db.close()
    assert _stored(own, "django-direct") == 0


def _sa_engine(own):
    with pytest.warns(neon_sqlalchemy.NeonClientPoolWarning):
        return neon_sqlalchemy.create_engine(env=own.env(), allow_client_pool=True)


def _cut_once(engine):
    cut = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        if not cut:
            cut.append(statement)
            _cut(conn.connection.driver_connection.fileno())


@pytest.mark.parametrize("values", [False, True], ids=["text", "values"])
def test_sqlalchemy_sends_a_transactions_first_statement_again(own, values):
    """Without values BEGIN goes in the statement's text; with values, in one pipeline."""
    engine = _sa_engine(own)
    key = f"sa-begin-{values}"
    insert = (
        sa.text("INSERT INTO residue VALUES (:k)")
        if values
        else sa.text(f"INSERT INTO residue VALUES ('{key}')")
    )
    try:
        with engine.connect():  # a kept connection in the pool, checked at the next checkout
            pass
        _cut_once(engine)
        with engine.begin() as conn:
            conn.execute(insert, {"k": key} if values else None)
            conn.execute(insert, {"k": key} if values else None)
    finally:
        engine.dispose()
    assert _stored(own, key) == 2


def test_async_sqlalchemy_sends_a_transactions_first_statement_again(own):
    """The async engines too: their driver connection, not SQLAlchemy's adapter, tells that
    the statement opens a transaction (the adapter tells no status: it was never resent)."""
    with pytest.warns(neon_sqlalchemy.NeonClientPoolWarning):
        engine = neon_sqlalchemy.create_async_engine(env=own.env(), allow_client_pool=True)
    _cut_once(engine.sync_engine)
    insert = sa.text("INSERT INTO residue VALUES (:k)")

    async def write() -> None:
        try:
            async with engine.connect():
                pass
            async with engine.begin() as conn:
                await conn.execute(insert, {"k": "sa-async"})
                await conn.execute(insert, {"k": "sa-async"})
        finally:
            await engine.dispose()

    asyncio.run(write())
    assert _stored(own, "sa-async") == 2


def test_control_sqlalchemy_in_autocommit_never_sends_it_again(own):
    engine = _sa_engine(own)
    try:
        _cut_once(engine)
        with (
            pytest.raises(sa.exc.OperationalError),
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        ):
            conn.execute(sa.text("INSERT INTO residue VALUES ('sa-autocommit')"))
    finally:
        engine.dispose()
    assert _stored(own, "sa-autocommit") == 0
