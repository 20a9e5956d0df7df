"""A statement the pooler refused without forwarding it is sent again on a new connection.

After a server login fails (a server restart, a crash-restart after an OOM kill), PgBouncer
answers every transaction's first statement with ``server login has been failing`` for
``server_login_retry`` (15 s, Neon's setting too) and closes the client. Here the window is
opened on a pool of its own: a fresh database refuses connections while PgBouncer's pool has
no server left, so PgBouncer's login fails exactly as it does while PostgreSQL restarts, and
then the database accepts connections again. Nothing else on the stand-in is disturbed.

Every test starts its callers inside one such window. The controls (the plain driver, and
each adapter with retries off) show the refusal; with the adapters' defaults each statement
succeeds, is stored once, and the log shows it was refused first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import neon_django
import neon_sqlalchemy
from neon_connect import RetryPolicy, is_refused_before_forwarding
from neon_connect import _begin_with_first_statement as first_statement
from neon_local.standin import DATABASE, OWNER, StandInState

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REFUSED = "server login has been failing"
RERUN_LOG = "refused a statement without forwarding it"
TABLE = "CREATE TABLE written (k text NOT NULL, via text NOT NULL)"
ITEMS = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)"


class _Base(sa.orm.DeclarativeBase):
    pass


class Item(_Base):
    __tablename__ = "items"
    id: sa.orm.Mapped[int] = sa.orm.mapped_column(primary_key=True)
    name: sa.orm.Mapped[str]


class Window:
    """A database whose PgBouncer pool is refusing: its URLs and what was stored in it."""

    def __init__(self, state: StandInState, db: str) -> None:
        self.db = db
        self.pooled_url = state.pooled_url.replace(f"/{DATABASE}?", f"/{db}?")
        self.direct_url = state.direct_url.replace(f"/{DATABASE}?", f"/{db}?")
        self.opened = time.monotonic()
        self.final: dict[str, int] | None = None  # what was stored, read before the drop

    def stored(self) -> dict[str, int]:
        with psycopg.connect(self.direct_url) as conn:
            rows = conn.execute("SELECT k, count(*) FROM written GROUP BY k").fetchall()
            items = conn.execute("SELECT count(*) FROM items").fetchone()
        return {**dict(rows), **({"items": items[0]} if items and items[0] else {})}


@contextlib.contextmanager
def fresh_database(state: StandInState, *, timezone: str = "Etc/UTC") -> Iterator[Window]:
    """A database of its own, so its PgBouncer pool is too; dropped afterwards.

    Its ``timezone`` is what PgBouncer reports to clients: Django (``UTC``) sends its own
    ``SET TIME ZONE`` while connecting unless they match, whatever the machine's zone is.
    """
    db = f"refusal_{uuid.uuid4().hex[:8]}"
    window = Window(state, db)
    with psycopg.connect(state.superuser_url, autocommit=True) as su:
        su.execute(f"CREATE DATABASE {db} OWNER {OWNER}")
        su.execute(f"ALTER DATABASE {db} SET timezone TO '{timezone}'")
    try:
        with psycopg.connect(window.direct_url, autocommit=True) as conn:
            conn.execute(TABLE)
            conn.execute(ITEMS)
        with psycopg.connect(window.pooled_url, autocommit=True) as conn:
            conn.execute("SELECT 1")  # the pool exists, with the server's parameters
        yield window
        window.final = window.stored()
    finally:
        with psycopg.connect(state.superuser_url, autocommit=True) as su:
            su.execute(f"DROP DATABASE {db} WITH (FORCE)")


def refuse(state: StandInState, window: Window) -> None:
    """Make PgBouncer's server login for ``window`` fail once, as while a server restarts:
    from now on, for ``server_login_retry``, the pool refuses every transaction."""
    with psycopg.connect(state.superuser_url, autocommit=True) as su:
        su.execute(f"ALTER DATABASE {window.db} ALLOW_CONNECTIONS false")
        su.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (window.db,),
        )
        _wait_for_no_server(state, window.db)
        _fail_one_server_login(window)
        su.execute(f"ALTER DATABASE {window.db} ALLOW_CONNECTIONS true")
    window.opened = time.monotonic()


def _fail_one_server_login(window: Window) -> None:
    """One client asks for a server, so PgBouncer logs in and fails. PgBouncer 1.24 answers
    it with the server's error at once; 1.18 keeps it waiting (up to query_wait_timeout), so
    it is given a moment and then closed."""
    conn = psycopg.connect(window.pooled_url, autocommit=True)
    try:
        conn.pgconn.send_query(b"SELECT 1")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            conn.pgconn.consume_input()
            if not conn.pgconn.is_busy():
                result = conn.pgconn.get_result()
                message = (result.error_message if result else b"").decode()
                assert "not currently accepting" in message, message
                return
            time.sleep(0.05)
    except psycopg.OperationalError as error:  # the pooler closed it after the error
        assert "not currently accepting" in str(error), error
    finally:
        conn.close()


@contextlib.contextmanager
def refusing_pool(state: StandInState) -> Iterator[Window]:
    """A fresh database behind PgBouncer whose server login has just failed."""
    with fresh_database(state) as window:
        refuse(state, window)
        yield window


def _wait_for_no_server(state: StandInState, db: str) -> None:
    with psycopg.connect(state.admin_url, autocommit=True) as admin:
        for _ in range(200):
            if not any(db in row for row in admin.execute("SHOW SERVERS").fetchall()):
                return
            time.sleep(0.05)
    raise AssertionError(f"PgBouncer kept a server connection to {db}")


def _wait_until_served(window: Window) -> None:
    """Until the pooler forwards again (its server_login_retry is over)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(window.pooled_url, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            time.sleep(0.5)
    raise AssertionError("the pooler still refuses after 40 s")


def _run_all(callers: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run the callers at once; each one's result or exception, by name."""
    outcomes: dict[str, Any] = {}

    def run(name: str, caller: Callable[[], Any]) -> None:
        try:
            outcomes[name] = caller()
        except Exception as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=run, args=item) for item in callers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == len(callers), "a caller did not finish within 60 s"
    return outcomes


class Messages(logging.Handler):
    """The library's warnings, from every thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in message for message in self.messages)


@pytest.fixture
def rerun_log() -> Iterator[Messages]:
    logger = logging.getLogger("neon_connect")
    handler, level = Messages(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_plain_driver_sees_the_refusal_and_the_closed_connection(standin):
    """What the adapters build on: the words, PgBouncer's SQLSTATE, and a closed connection."""
    with refusing_pool(standin) as window:
        conn = psycopg.connect(window.pooled_url)  # logging in needs no server
        with pytest.raises(psycopg.OperationalError, match=REFUSED) as info:
            conn.execute("INSERT INTO written VALUES ('plain', 'psycopg')")
        assert conn.broken
        assert is_refused_before_forwarding(info.value, conn)
        conn.close()
    assert window.final == {}


def test_sqlalchemy_sends_a_refused_statement_again(standin, rerun_log):
    with fresh_database(standin) as window:
        env = {"DATABASE_URL": window.pooled_url, "DATABASE_URL_UNPOOLED": window.direct_url}
        engine = neon_sqlalchemy.create_engine(env=env)
        control = neon_sqlalchemy.create_engine(env=env, retry=RetryPolicy(timeout=0))
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async_engine = neon_sqlalchemy.create_async_engine(env=env)
        insert = sa.text("INSERT INTO written VALUES (:k, :via)")
        # The engines' first connections (the dialect's own queries) happen before the window,
        # as in a running app; the later ones (NullPool) meet the refusal at a statement.
        for warm in (engine, control):
            with warm.connect() as conn:
                conn.execute(sa.text("SELECT 1"))

        async def warm_async() -> None:
            async with async_engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))

        asyncio.run(warm_async())
        async_engine.sync_engine.dispose(close=False)  # its loop is gone; the next run has one

        # SQLAlchemy's profiling recipe keeps state in Connection.info around each execute:
        # the reconnect under the checked-out connection must not clear it.
        @sa.event.listens_for(engine, "before_cursor_execute")
        def _started(conn, cursor, statement, parameters, context, executemany):
            conn.info.setdefault("started", []).append(time.monotonic())

        @sa.event.listens_for(engine, "after_cursor_execute")
        def _finished(conn, cursor, statement, parameters, context, executemany):
            conn.info["started"].pop()

        refuse(standin, window)

        def in_transaction(eng: sa.Engine, key: str) -> str:
            with eng.begin() as conn:  # the refusal comes at the transaction's first statement
                conn.execute(insert, {"k": key, "via": "sync"})
                conn.execute(insert, {"k": f"{key}-2", "via": "sync"})
            return "ok"

        def autocommitted() -> str:
            with autocommit.connect() as conn:
                conn.execute(insert, {"k": "autocommit", "via": "sync"})
                assert conn.connection.driver_connection.autocommit  # set again on the new one
            return "ok"

        def fresh_engine() -> str:
            # An engine whose first connection meets the refusal: the connect step retries it
            new = neon_sqlalchemy.create_engine(env=env)
            try:
                in_transaction(new, "fresh")
            finally:
                new.dispose()
            return "ok"

        def orm() -> str:
            with sa.orm.Session(engine) as session, session.begin():
                session.execute(insert, {"k": "orm", "via": "session"})
            return "ok"

        def orm_flush() -> str:
            # Two new rows with server-made keys: SQLAlchemy's insertmanyvalues reads RETURNING
            # rows from the cursor it holds, which a new connection cannot replace: not re-sent.
            with sa.orm.Session(engine) as session, session.begin():
                session.add_all([Item(name="a"), Item(name="b")])
            return "ok"

        def autocommit_many() -> str:
            # executemany in autocommit: each row could commit alone, so a refusal could follow
            # rows that ran: not re-sent. (psycopg 3 sends the rows in one pipeline and reports
            # only the closed connection, so this checks the outcome, not the exclusion.)
            with autocommit.connect() as conn:
                conn.execute(
                    insert, [{"k": "many-1", "via": "sync"}, {"k": "many-2", "via": "sync"}]
                )
            return "ok"

        def in_async() -> str:
            async def write() -> str:
                async with async_engine.begin() as conn:
                    await conn.execute(insert, {"k": "async", "via": "async"})
                await async_engine.dispose()
                return "ok"

            return asyncio.run(write())

        outcomes = _run_all(
            {
                "control": lambda: in_transaction(control, "control"),
                "transaction": lambda: in_transaction(engine, "tx"),
                "autocommit": autocommitted,
                "orm": orm,
                "async": in_async,
                "fresh engine": fresh_engine,
                "orm flush": orm_flush,
                "autocommit executemany": autocommit_many,
            }
        )
        waited = time.monotonic() - window.opened

    for not_sent_again in ("orm flush", "autocommit executemany"):
        # the refusal (psycopg's pipeline reports only the closed connection); nothing stored
        error = outcomes.pop(not_sent_again)
        assert isinstance(error, sa.exc.OperationalError), (not_sent_again, error)
    control_error = outcomes.pop("control")
    assert isinstance(control_error, sa.exc.OperationalError), control_error
    # BEGIN and the first statement go in one pipeline: PgBouncer's refusal then most often
    # reaches the client only as the closed connection, with a note saying what it means
    notes = getattr(control_error.orig, "__notes__", [])
    assert REFUSED in str(control_error) or first_statement.CLOSED_AT_FIRST in notes, notes
    assert outcomes == dict.fromkeys(outcomes, "ok"), outcomes
    keys = ["tx", "tx-2", "autocommit", "orm", "async", "fresh", "fresh-2"]
    assert window_stored_once(window, keys)
    assert rerun_log.count(RERUN_LOG) >= len(outcomes) - 1, rerun_log.messages  # not "fresh"
    assert rerun_log.count("connecting to the pooled endpoint")  # the fresh engine's
    assert waited > 5  # they did wait for the pooler, not pass by luck


def window_stored_once(window: Window, keys: list[str]) -> bool:
    assert window.final == dict.fromkeys(keys, 1), window.final
    return True


def test_a_statement_that_reached_the_server_is_never_sent_again(standin, rerun_log):
    """The same words from the server itself, even with PgBouncer's SQLSTATE, through the
    pooler: the connection stays open, so it is not a refusal. A sequence counts executions
    (a rollback does not undo ``nextval``)."""
    counter = f"executions_{uuid.uuid4().hex[:8]}"
    raise_it = (
        f"DO $$ BEGIN PERFORM nextval('{counter}'); "
        f"RAISE EXCEPTION USING ERRCODE = '08P01', MESSAGE = '{REFUSED}, said the server'; END $$"
    )
    with psycopg.connect(standin.direct_url, autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {counter}")
    engine = neon_sqlalchemy.create_engine(env=standin.env())
    try:
        with pytest.raises(sa.exc.DBAPIError, match="said the server"), engine.begin() as c:
            c.exec_driver_sql(raise_it)
        with psycopg.connect(standin.direct_url, autocommit=True) as conn:
            assert conn.execute(f"SELECT last_value FROM {counter}").fetchone()[0] == 1
    finally:
        engine.dispose()
        with psycopg.connect(standin.direct_url, autocommit=True) as conn:
            conn.execute(f"DROP SEQUENCE {counter}")
    assert rerun_log.count(RERUN_LOG) == 0


@pytest.mark.psycopg3_only  # psycopg2 reports only "SSL connection has been closed unexpectedly"
def test_django_sends_a_refused_statement_again(standin, rerun_log, django_db_blocker):
    """Connections opened before the window (CONN_MAX_AGE > 0, health checks off or passed
    earlier in the request) meet the refusal at a statement: the cursor sends it again. A
    connection opened inside the window meets it in Django's own set-up: the connect retry."""
    from django.db import DatabaseError, ProgrammingError, connections, transaction

    with fresh_database(standin) as window, django_db_blocker.unblock():
        aliases = {
            "refusal": neon_django.config(window.pooled_url, direct_url=window.direct_url),
            "refusal_control": neon_django.config(
                window.pooled_url, direct_url=window.direct_url, retry=RetryPolicy(timeout=0)
            ),
            "refusal_short": neon_django.config(
                window.pooled_url, direct_url=window.direct_url, retry=RetryPolicy(timeout=1)
            ),
        }
        # Django's defaults (TIME_ZONE, TEST, ...) filled in as for any configured alias
        filled = connections.configure_settings({"default": {}, **aliases})
        connections.settings.update({alias: filled[alias] for alias in aliases})
        committed: list[str] = []
        manual_hooks: list[str] = []
        early: list[str] = []
        sql = "INSERT INTO written VALUES (%s, %s)"
        opened = threading.Barrier(8)  # seven callers and the window
        refused = threading.Event()

        def autocommitted() -> None:
            with connections["refusal"].cursor() as cursor:
                cursor.execute(sql, ["autocommit", "django"])

        def atomic() -> None:
            with transaction.atomic(using="refusal"):
                transaction.on_commit(lambda: committed.append("outer"), using="refusal")
                with (
                    transaction.atomic(using="refusal"),  # its SAVEPOINT is the first statement
                    connections["refusal"].cursor() as cursor,
                ):
                    cursor.execute(sql, ["atomic", "django"])
                with connections["refusal"].cursor() as cursor:
                    cursor.executemany(sql, [["many-1", "django"], ["many-2", "django"]])

        def control() -> None:
            with connections["refusal_control"].cursor() as cursor:
                cursor.execute(sql, ["control", "django"])

        def autocommit_many() -> None:
            # not re-sent (as for SQLAlchemy above, this checks the outcome on psycopg 3)
            with connections["refusal"].cursor() as cursor:
                cursor.executemany(sql, [["am-1", "django"], ["am-2", "django"]])

        def atomic_gives_up() -> None:
            # The budget (1 s) runs out inside atomic(): the block must stay broken, as
            # Django leaves one whose connection closed, even once the pooler serves again.
            db = connections["refusal_short"]
            with transaction.atomic(using="refusal_short"):
                with pytest.raises(DatabaseError), db.cursor() as cursor:
                    cursor.execute(sql, ["gave-up-1", "django"])
                _wait_until_served(window)
                with db.cursor() as cursor:
                    cursor.execute(sql, ["gave-up-2", "django"])  # must not autocommit

        def new_connection() -> None:
            with connections["refusal"].cursor() as cursor:
                cursor.execute(sql, ["new", "django"])

        def manual_commit() -> None:
            # Before the window: a manual transaction committed; its hooks wait for autocommit
            transaction.set_autocommit(False, using="refusal")
            with connections["refusal"].cursor() as cursor:
                cursor.execute(sql, ["manual-1", "django"])
            transaction.commit(using="refusal")

        def manual_then_atomic() -> None:
            # savepoint=False: no SAVEPOINT at entry, so the hook is registered before the
            # first statement, which the pooler refuses
            with transaction.atomic(using="refusal", savepoint=False):
                transaction.on_commit(lambda: manual_hooks.append("manual"), using="refusal")
                with connections["refusal"].cursor() as cursor:
                    cursor.execute(sql, ["manual-2", "django"])
            early.extend(manual_hooks)  # what ran before the real COMMIT below (must be nothing)
            transaction.commit(using="refusal")
            transaction.set_autocommit(True, using="refusal")  # Django runs the hook here

        def in_window(
            caller: Callable[[], None],
            alias: str,
            *,
            connect: bool,
            before: Callable[[], None] | None = None,
        ) -> Callable[[], str]:
            def run() -> str:
                try:
                    if connect:
                        connections[alias].ensure_connection()  # before the window
                    if before is not None:
                        before()
                    opened.wait(30)
                    refused.wait(30)
                    caller()
                    return "ok"
                finally:
                    connections[alias].close()  # thread-local: each thread closes its own

            return run

        def open_window() -> str:
            opened.wait(30)
            refuse(standin, window)
            refused.set()
            return "ok"

        try:
            outcomes = _run_all(
                {
                    "control": in_window(control, "refusal_control", connect=True),
                    "autocommit": in_window(autocommitted, "refusal", connect=True),
                    "atomic": in_window(atomic, "refusal", connect=True),
                    "new connection": in_window(new_connection, "refusal", connect=False),
                    "autocommit executemany": in_window(autocommit_many, "refusal", connect=True),
                    "atomic gives up": in_window(atomic_gives_up, "refusal_short", connect=True),
                    "manual": in_window(
                        manual_then_atomic, "refusal", connect=True, before=manual_commit
                    ),
                    "window": open_window,
                }
            )
        finally:
            for alias in aliases:
                del connections.settings[alias]

    control_error = outcomes.pop("control")
    assert REFUSED in str(control_error), control_error
    assert isinstance(outcomes.pop("autocommit executemany"), DatabaseError)
    gave_up = outcomes.pop("atomic gives up")
    assert isinstance(gave_up, (DatabaseError, ProgrammingError)), gave_up
    assert outcomes == dict.fromkeys(outcomes, "ok"), outcomes
    assert committed == ["outer"]  # on_commit kept across the new connection, run once
    assert manual_hooks == ["manual"]
    assert early == []  # connect() did not run the manual transaction's hook before its COMMIT
    stored = ["autocommit", "atomic", "many-1", "many-2", "new", "manual-1", "manual-2"]
    assert window_stored_once(window, stored)
    assert rerun_log.count(RERUN_LOG) >= 2, rerun_log.messages  # autocommit, atomic
    assert rerun_log.count("connecting to the pooled endpoint"), rerun_log.messages


@pytest.mark.psycopg3_only
def test_django_a_connection_created_receiver_meets_the_refusal(
    standin, rerun_log, django_db_blocker
):
    """Django's set-up sends nothing here (the time zones match), so a receiver's statement
    is the first the pooler sees. It is not sent again from inside ``connect()``: the refused
    statement's own loop reconnects, and the receiver runs once on the connection that works."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    def receiver(sender, connection, **kwargs):
        if connection.alias == "refusal_tz":
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO written VALUES ('receiver', 'django')")

    with fresh_database(standin, timezone="UTC") as window, django_db_blocker.unblock():
        settings = neon_django.config(window.pooled_url, direct_url=window.direct_url)
        filled = connections.configure_settings({"default": {}, "refusal_tz": settings})
        connections.settings["refusal_tz"] = filled["refusal_tz"]
        connection_created.connect(receiver)
        try:
            db = connections["refusal_tz"]
            db.ensure_connection()  # the receiver's first row, before the window
            refuse(standin, window)
            with db.cursor() as cursor:
                cursor.execute("INSERT INTO written VALUES ('statement', 'django')")
        finally:
            connection_created.disconnect(receiver)
            connections["refusal_tz"].close()
            del connections.settings["refusal_tz"]

    # once before the window, once on the connection that worked; the statement once
    assert window.final == {"receiver": 2, "statement": 1}, window.final
    assert rerun_log.count(RERUN_LOG) >= 1, rerun_log.messages
