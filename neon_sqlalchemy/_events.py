"""Engine event listeners: connect retry, commit outcome, fork safety, the migration lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.engine.interfaces import ExecuteStyle
from sqlalchemy.util.concurrency import await_only, greenlet_spawn

from neon_connect import Endpoint, RetryPolicy, is_refused_before_forwarding
from neon_connect._liveness import Liveness, liveness, refuse_commit_if_lost
from neon_connect._migration_lock import MIGRATION_LOCK_KEY
from neon_connect._retry import connection_lost, in_pipeline, opens_transaction, resending
from neon_connect._secret import acall_without_driver_frames, call_without_driver_frames
from neon_connect._session_guard import GuardMode, check_statement, explain_pooler_error
from neon_connect._sigterm import on_sigterm, run_briefly, stopping

logger = logging.getLogger("neon_sqlalchemy")


PoolerProbe = Callable[[Any, Callable[[], Any]], None]
"""Called with a new sync DBAPI connection and a way to open another (see _engines.py)."""


def add_retry(
    engine: Engine,
    endpoint: Endpoint,
    policy: RetryPolicy,
    *,
    pooler_probe: PoolerProbe | None = None,
) -> None:
    """Retry the connect step of ``engine`` while a compute wakes or a server restarts.

    The driver's connect; :func:`add_statement_listeners` sends again the statement a
    transaction pooler refused because its own server login failed. Nothing that reached a
    server is ever sent again.

    The driver's error comes without the driver's frames, which hold the password in clear
    (:func:`neon_connect._secret.call_without_driver_frames`), with retrying on or off.
    """
    retrying = policy.timeout > 0

    def first(dialect: Any) -> bool:
        # The engine's first connection runs the dialect's queries (server version and so
        # on) before any pool entry exists to reconnect: behind a transaction pooler, prove
        # inside the connect step that the pooler forwards, so a refusal is retried here.
        return retrying and endpoint.transaction_pooler and dialect.server_version_info is None

    @event.listens_for(engine, "do_connect")
    def _connect(
        dialect: Any, conn_rec: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        if not dialect.is_async:

            def connect() -> Any:
                conn = call_without_driver_frames(lambda: dialect.connect(*cargs, **cparams))
                if first(dialect):
                    _probe(conn)
                return conn

            conn = policy.call(connect, endpoint=endpoint) if retrying else connect()
            if pooler_probe is not None:  # after the retry: its notes are about connecting
                pooler_probe(
                    conn,
                    lambda: call_without_driver_frames(lambda: dialect.connect(*cargs, **cparams)),
                )
            return conn
        # Async drivers: wrap the driver's own coroutine so that backoff sleeps are awaited.
        creator = cparams.pop("async_creator_fn", None) or _driver_connect(dialect)

        async def aconnect(*args: Any, **kwargs: Any) -> Any:
            conn = await acall_without_driver_frames(lambda: creator(*args, **kwargs))
            if first(dialect):
                await _aprobe(conn)
            return conn

        async def connect_with_retry(*args: Any, **kwargs: Any) -> Any:
            if not retrying:
                return await aconnect(*args, **kwargs)
            return await policy.acall(lambda: aconnect(*args, **kwargs), endpoint=endpoint)

        return dialect.loaded_dbapi.connect(*cargs, async_creator_fn=connect_with_retry, **cparams)


def _probe(conn: Any) -> None:
    """One statement on a new DBAPI connection; closes it if the statement fails."""
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        conn.rollback()
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()
        raise


async def _aprobe(conn: Any) -> None:
    """:func:`_probe` for a driver's own async connection (psycopg's or asyncpg's)."""
    try:
        await conn.execute("SELECT 1")
        rollback = getattr(conn, "rollback", None)  # asyncpg is in autocommit
        if rollback is not None:
            await rollback()
    except Exception:
        with contextlib.suppress(Exception):
            await conn.close()
        raise


_Execute = Callable[[Any], None]  # sends the statement on the cursor it is given


def add_liveness_check(engine: Engine) -> None:
    """At each pool checkout, replace a connection the server or pooler closed while it sat
    in the pool, without a round trip (:mod:`neon_connect._liveness`).

    Raising ``DisconnectionError`` from ``checkout`` is SQLAlchemy's documented way to have
    the pool drop the connection and check out another. Where the socket cannot tell, the
    dialect's ping decides, as ``pool_pre_ping`` would have for every checkout.
    """

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        state = liveness(driver)
        if state is Liveness.UNSURE:
            state = Liveness.ALIVE if engine.dialect.do_ping(dbapi_connection) else Liveness.DEAD
        if state is Liveness.DEAD:
            raise exc.DisconnectionError("neon-connect: the server closed this pooled connection")


_IDLE_SINCE = "neon_idle_since"
"""The wall-clock time a pooled connection was checked in (``record.info``, which lives as
long as the driver's connection)."""


def add_idle_limit(engine: Engine, seconds: float) -> None:
    """Replace a pooled connection that sat idle more than ``seconds`` at checkout, as Neon
    advises on elastic platforms. The wall clock, not a timer: a frozen container's timers
    stop, and its connections may have been dropped meanwhile."""

    @event.listens_for(engine, "checkin")
    def _idle_since(dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.time()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is not None and time.time() - since > seconds:
            raise exc.DisconnectionError(f"neon-connect: idle more than {seconds:g} s")


def add_close_on_sigterm(engine: Engine) -> None:
    """Close the pool's connections at SIGTERM (``neon_connect/_sigterm.py``): the idle ones
    at once, each one in use when it is checked in. A sync pool is emptied from a helper
    thread, since the handler may have interrupted the pool's own code; an async one by a
    task on the loop the handler interrupted, if that loop goes on running (a graceful
    shutdown: uvicorn's)."""

    @event.listens_for(engine, "checkin")
    def _close_when_stopping(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None and stopping():
            record.close()  # the next checkout, if any, connects afresh

    on_sigterm(engine, _close_idle, where="neon_sqlalchemy engine")


_closing: set[asyncio.Task[Any]] = set()
"""Tasks started at SIGTERM, held until done (the loop keeps only weak references)."""


def _close_idle(engine: Engine) -> None:
    pool = engine.pool
    if not engine.dialect.is_async:
        run_briefly(lambda: _close_checked_in(pool))
        return
    try:
        loop = asyncio.get_running_loop()  # the handler runs in the loop's thread, if any
    except RuntimeError:
        return  # no loop running: the pool's connections close with the process

    def start() -> None:
        task = loop.create_task(greenlet_spawn(_close_checked_in, pool))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    loop.call_soon_threadsafe(start)


def _close_checked_in(pool: Any) -> None:
    """Close the connections sitting in ``pool`` and put their entries back, so the next
    checkout connects afresh. Not ``pool.dispose()``: it resets the overflow count while
    connections are checked out, and the pool then hands out more than its limit."""
    queue = getattr(pool, "_pool", None)
    if queue is None:
        return
    records = []
    with contextlib.suppress(Exception):  # empty: sqlalchemy.util.queue.Empty
        while True:
            records.append(queue.get(False))
    for record in records:
        with contextlib.suppress(Exception):
            record.close()
        queue.put(record, False)


def add_pooler_error_notes(engine: Engine) -> None:
    """Name the cause of errors that mean something else behind a transaction pooler."""

    @event.listens_for(engine, "handle_error")
    def _explain(context: ExceptionContext) -> None:
        raised = context.sqlalchemy_exception
        explain_pooler_error(context.original_exception, into=raised)


def add_statement_listeners(
    engine: Engine,
    endpoint: Endpoint,
    *,
    rerun: RetryPolicy | None,
    session_guard: GuardMode,
) -> None:
    """Wrap each way the dialect sends a statement: the session guard before it, and after an
    error, the rerun of a statement that cannot have run.

    - **Session guard** (``session_guard`` "error" or "warn", on a transaction pooler only):
      stop a statement that would leave session state for the pooler's next client, before
      anything is sent, on every path (Core, ORM, ``exec_driver_sql``). The dialect's own first
      queries pass (none of them sets session state).
    - **Rerun** (``rerun``, the retry policy when retrying is on): PgBouncer answers ``server
      login has been failing`` for ``server_login_retry`` after a server restart, at a
      transaction's first statement, and closes the client. The statement never ran and no
      transaction was open, so it is sent again on a new connection in the same place: the
      pool's record reconnects under the checked-out connection, as SQLAlchemy's own pre-ping
      does, and the SQLAlchemy transaction carries on unaware.

    Both live on the dialect's ``do_execute`` events, which cost one call per statement. A
    ``Connection`` event (``before_cursor_execute``, ``commit``) would route every statement
    through SQLAlchemy's whole event dispatch: about 10 % of a kept connection's request.
    """
    guarded = endpoint.transaction_pooler and session_guard != "off"
    if rerun is None and not guarded:
        return
    where = f"the engine for {engine.url.render_as_string(hide_password=True)}"
    policy = rerun
    sleep = _await_sleep if engine.dialect.is_async else time.sleep
    pooler = endpoint.transaction_pooler

    def recover(
        execute: _Execute,
        context: DefaultExecutionContext,
        error: Exception,
        *,
        opening: bool,
        many: bool = False,
    ) -> bool:
        """After ``error``: send the statement again where that is safe, or raise."""
        if policy is None or not _rerunnable(context, error, many=many):
            raise error

        def is_refusal(error: Exception) -> bool:
            return is_refused_before_forwarding(error, _driver(context.root_connection))

        def send_again(after: Exception) -> None:
            """On a new connection, with BEGIN alone if it opens a transaction: an error the
            pooler gives before closing (a refusal) then comes in its own words."""
            _reconnect(context, after)
            context.cursor = context.create_cursor()
            with resending(_driver(context.root_connection)):
                execute(context.cursor)

        lost = connection_lost(_driver(context.root_connection))
        if opening and lost and not is_refusal(error):
            # The residue of the checkout check: a pooler connection that dies between the
            # check and a transaction's first statement, or one PgBouncer closed with an
            # error that BEGIN's pipeline could not read (a refusal, see
            # _begin_with_first_statement). Nothing of that transaction can have committed
            # and a pooler connection holds no session: send it once more, on a new
            # connection. Never in autocommit (it may have run).
            try:
                send_again(error)
                return True
            except Exception as second:
                # a pooler that lost its server (a restart) refuses the new connection's
                # statement for server_login_retry: wait that out as for any refusal
                if not is_refusal(second):
                    raise
                refused = second
        elif not is_refusal(error):
            raise error
        else:
            refused = error

        def again() -> None:
            send_again(refused)

        policy.rerun_refused(
            again, refused=refused, is_refusal=is_refusal, endpoint=endpoint, sleep=sleep
        )
        return True

    def sending(name: str, *, many: bool = False) -> Callable[..., bool]:
        """The ``do_execute``/``do_executemany`` listener: the guard, the dialect's own call,
        and on an error :func:`recover` (no closure or extra frame on the path that succeeds)."""

        def listener(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
            if guarded:
                check_statement(statement, mode=session_guard, where=where)
            dialect = context.dialect
            do = getattr(dialect, name)
            later = getattr(dialect.dispatch, name)
            # read before sending (the transaction's status changes as it is sent); all else
            # is decided after an error, off the request path
            # the driver's own connection: an async adapter tells no transaction status
            first = pooler and opens_transaction(
                context.root_connection.connection.driver_connection
            )
            try:
                _send_after(listener, later, do, cursor, statement, parameters, context)
            except Exception as error:

                def again(c: Any) -> None:
                    _send_after(listener, later, do, c, statement, parameters, context)

                return recover(again, context, error, opening=first, many=many)
            return True

        return listener

    event.listen(engine, "do_execute", sending("do_execute"))
    event.listen(engine, "do_executemany", sending("do_executemany", many=True))

    @event.listens_for(engine, "do_execute_no_params")
    def _execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        if guarded:
            check_statement(statement, mode=session_guard, where=where)
        dialect = context.dialect
        do = dialect.do_execute_no_params
        later = dialect.dispatch.do_execute_no_params
        first = pooler and opens_transaction(context.root_connection.connection.driver_connection)
        try:
            _send_after(_execute_no_params, later, do, cursor, statement, context)
        except Exception as error:

            def again(c: Any) -> None:
                _send_after(_execute_no_params, later, do, c, statement, context)

            return recover(again, context, error, opening=first)
        return True


def _send_after(me: Callable[..., Any], listeners: Any, do: Callable[..., Any], *args: Any) -> None:
    """Send the statement as SQLAlchemy would after ``me``: the listeners registered after ours
    first (an app's own ``do_execute`` listener; ours returns True, which ends SQLAlchemy's
    loop, so without this they never ran), then the dialect's own call if none took it."""
    found = False
    for fn in listeners:
        if found:
            if fn(*args):
                return
        elif fn is me:
            found = True
    do(*args)


def _reconnect(context: DefaultExecutionContext, refused: Exception) -> None:
    """A new driver connection under the checked-out one, set up as the old one was."""
    conn = context.root_connection
    proxied: Any = conn.connection  # the pool's _ConnectionFairy
    record = proxied._connection_record
    info = dict(record.info)  # Connection.info: listeners keep state there across an execute
    record.invalidate(refused)  # closes the refused connection; the 'invalidate' event runs
    proxied.dbapi_connection = record.get_connection()  # the pool's 'connect' event runs
    for key, value in info.items():  # the reconnect cleared it; 'connect' listeners' keys win
        record.info.setdefault(key, value)
    # per-Connection options (isolation level, read only) were set on the old one
    dialect: Any = context.dialect  # a DefaultDialect: it has connection_characteristics
    for name, value in conn.get_execution_options().items():
        characteristic = dialect.connection_characteristics.get(name)
        if characteristic is not None:
            # SQLAlchemy 2.1's logging_token lives on the Connection, not the driver's
            with contextlib.suppress(NotImplementedError):
                characteristic.set_characteristic(dialect, proxied.dbapi_connection, value)


def _rerunnable(context: DefaultExecutionContext, error: Exception, *, many: bool) -> bool:
    """Whether a refusal of this execution could be answered by sending it again.

    Not for ``insertmanyvalues`` (SQLAlchemy reads RETURNING rows and sends later batches on
    the cursor it holds, which a new connection cannot replace), not for ``executemany`` in
    autocommit (each row commits alone: the refusal can follow rows that ran), not in psycopg's
    pipeline mode (an error there can belong to an earlier queued statement), and not while
    the pool entry is still being made (the dialect's first queries; the connect step retries).
    """
    dbapi_connection = context.root_connection.connection.dbapi_connection
    if context.execute_style is ExecuteStyle.INSERTMANYVALUES or not _checked_out(context):
        return False
    if many and getattr(dbapi_connection, "autocommit", False):
        return False
    return not in_pipeline(_driver(context.root_connection), error)


def _checked_out(context: DefaultExecutionContext) -> bool:
    """False while the pool entry is still being made (the dialect's first queries run inside
    the pool's connect): there is nothing to reconnect yet, and the connect step retries."""
    record = getattr(context.root_connection.connection, "_connection_record", None)
    return record is not None and hasattr(record, "finalize_callback")


def _await_sleep(seconds: float) -> None:
    await_only(asyncio.sleep(seconds))  # inside SQLAlchemy's greenlet: the event loop runs on


_COMMIT_FAILED = "_neon_commit_failed"
"""The mark an error raised by a COMMIT carries (see :func:`add_commit_outcome`)."""


def add_commit_outcome(engine: Engine) -> None:
    """Say "outcome unknown" when ``COMMIT`` fails because its connection was lost.

    SQLAlchemy reports that as an ordinary ``OperationalError`` (or psycopg's ``InternalError:
    received 2 results``), which reads like a rollback although the write may be stored. The
    replacement is a ``sqlalchemy.exc.OperationalError`` whose ``orig`` is
    :class:`neon_connect.CommitOutcomeUnknown`; a refusal by a live server is left alone. A
    connection found lost before ``COMMIT`` is sent gives :class:`neon_connect.CommitNotSent`.
    """

    # The error must be the COMMIT's own. SQLAlchemy has no dialect event for a commit, and
    # its "commit" Connection event would route every statement through the whole event
    # dispatch (about 10 % of a kept connection's request): so the engine's own dialect
    # instance gets a do_commit that marks the error it raises, one call per COMMIT. Only an
    # Exception is marked: KeyboardInterrupt and SystemExit pass untouched, as SQLAlchemy
    # expects them (it invalidates the connection), and the mark is an attribute, which
    # every exception takes (built-in ones refuse weak references).
    dialect = engine.dialect
    if getattr(dialect.do_commit, "neon_marks_errors", False):
        return  # the Alembic plugin and create_engine() on the same engine
    do_commit = dialect.do_commit

    def _do_commit(dbapi_connection: Any) -> None:
        # psycopg 3 only, no bytes sent: nothing stored
        refuse_commit_if_lost(getattr(dbapi_connection, "driver_connection", dbapi_connection))
        try:
            do_commit(dbapi_connection)
        except Exception as error:
            with contextlib.suppress(AttributeError, TypeError):  # an exception with __slots__
                setattr(error, _COMMIT_FAILED, True)
            raise

    _do_commit.neon_marks_errors = True  # type: ignore[attr-defined]
    dialect.do_commit = _do_commit  # type: ignore[method-assign]

    @event.listens_for(engine, "handle_error")
    def _commit_failed(context: ExceptionContext) -> BaseException | None:
        orig = context.original_exception
        if not getattr(orig, _COMMIT_FAILED, False):
            return None
        conn = context.connection
        if conn is None:
            return None
        try:  # lazily: a psycopg2 or asyncpg engine does not load psycopg for nothing
            from neon_connect._commit_outcome import is_commit_outcome_unknown, outcome_unknown
        except ImportError:
            return None
        broken = is_commit_outcome_unknown(orig, _driver(conn))
        if not (context.is_disconnect or broken):
            return None  # a live server refused the COMMIT: a definite rollback
        unknown = outcome_unknown(orig)
        unknown.__cause__ = orig
        return exc.OperationalError(
            "COMMIT", None, unknown, connection_invalidated=context.is_disconnect
        )


def _driver(conn: Connection) -> Any:
    """The driver's own connection (psycopg's has ``broken``), or None once it is gone."""
    try:
        return conn.connection.driver_connection
    except Exception:
        return None


def _driver_connect(dialect: Any) -> Any:
    if dialect.driver == "asyncpg":
        import asyncpg

        return asyncpg.connect
    import psycopg

    return psycopg.AsyncConnection.connect


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_engines):
        # close=False: the parent still owns those sockets; the child just forgets them.
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose_after_fork(engine: Engine) -> None:
    """Make sure a forked child (gunicorn --preload, multiprocessing, Celery) never reuses
    a connection the parent opened: the child starts with an empty pool."""
    _engines.add(engine)


def add_migration_lock(engine: Engine, key: int = MIGRATION_LOCK_KEY) -> None:
    """Take a session advisory lock on every new connection, so migration runs queue up.

    The lock lives as long as the connection: with ``NullPool`` it is released when the
    migration's connection closes, and explicitly on check-in. It needs the direct
    endpoint: behind a transaction pooler a session lock is stranded on a random backend.
    """

    @event.listens_for(engine, "connect")
    def _lock(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            logger.info("neon_sqlalchemy: waiting for the migration lock")
            cursor.execute(f"SELECT pg_advisory_lock({int(key)})")
        finally:
            cursor.close()
        dbapi_connection.commit()  # keep no transaction open; the session lock stays

    @event.listens_for(engine, "checkin")
    def _unlock(dbapi_connection: Any, connection_record: Any) -> None:
        if dbapi_connection is None:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SELECT pg_advisory_unlock({int(key)})")  # ours only, not the user's
            cursor.close()
            dbapi_connection.commit()
        except Exception:  # the connection may be broken; closing it releases the lock anyway
            logger.debug("neon_sqlalchemy: could not unlock on check-in", exc_info=True)


def add_begin_with_first_statement(engine: Engine) -> None:
    """psycopg 3: send ``BEGIN`` in the message of a transaction's first statement, one round
    trip fewer per transaction (:mod:`neon_connect._begin_with_first_statement`)."""
    from neon_connect._begin_with_first_statement import install  # psycopg engines only

    @event.listens_for(engine, "connect")
    def _install(dbapi_connection: Any, _record: Any) -> None:
        install(getattr(dbapi_connection, "driver_connection", dbapi_connection))


def add_socket_keepalives(engine: Engine, options: list[tuple[int, int, int]]) -> None:
    """Set the keepalives and ``tcp_user_timeout`` on each new asyncpg connection's socket.

    libpq drivers get them as connect parameters; asyncpg has none, so a half-open
    connection would wait out the kernel's two hours. The socket is asyncpg's transport's
    (``get_extra_info("socket")``, TLS included)."""
    if not options:
        return

    @event.listens_for(engine, "connect")
    def _keepalives(dbapi_connection: Any, _record: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        transport = getattr(driver, "_transport", None)
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return  # an asyncpg without that attribute, or a Unix socket: nothing to set
        for level, option, value in options:
            sock.setsockopt(level, option, value)
