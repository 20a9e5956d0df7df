"""Engine event listeners: cold-start retry, commit outcome, fork safety, the migration lock."""

from __future__ import annotations

import hashlib
import logging
import os
import weakref
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine, ExceptionContext

from neon_connect import Endpoint, RetryPolicy

__all__ = [
    "MIGRATION_LOCK_KEY",
    "add_commit_outcome",
    "add_migration_lock",
    "add_retry",
    "dispose_after_fork",
]

logger = logging.getLogger("neon_sqlalchemy")

MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"neon_sqlalchemy.migrations").digest()[:8], "big", signed=True
)
"""The session advisory lock that serialises migration runs (a stable 64-bit key)."""


def add_retry(engine: Engine, endpoint: Endpoint, policy: RetryPolicy) -> None:
    """Retry the connect step of ``engine`` while a compute wakes (never a query)."""
    if policy.timeout <= 0:
        return

    @event.listens_for(engine, "do_connect")
    def _connect(
        dialect: Any, conn_rec: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> Any:
        if not dialect.is_async:
            return policy.call(lambda: dialect.connect(*cargs, **cparams), endpoint=endpoint)
        # Async drivers: wrap the driver's own coroutine so that backoff sleeps are awaited.
        creator = cparams.pop("async_creator_fn", None) or _driver_connect(dialect)

        async def connect_with_retry(*args: Any, **kwargs: Any) -> Any:
            return await policy.acall(lambda: creator(*args, **kwargs), endpoint=endpoint)

        return dialect.loaded_dbapi.connect(*cargs, async_creator_fn=connect_with_retry, **cparams)


_COMMITTING = "neon_committing"


def add_commit_outcome(engine: Engine) -> None:
    """Say "outcome unknown" when ``COMMIT`` fails because its connection was lost.

    SQLAlchemy reports that as an ordinary ``OperationalError`` (or psycopg's ``InternalError:
    received 2 results``), which reads like a rollback although the write may be stored. The
    replacement is a ``sqlalchemy.exc.OperationalError`` whose ``orig`` is
    :class:`neon_connect.CommitOutcomeUnknown`; a refusal by a live server is left alone.
    """

    @event.listens_for(engine, "commit")
    def _committing(conn: Connection) -> None:
        conn.info[_COMMITTING] = True  # the driver's commit() runs right after this event

    @event.listens_for(engine, "begin")
    @event.listens_for(engine, "rollback")
    def _not_committing(conn: Connection) -> None:
        conn.info.pop(_COMMITTING, None)

    @event.listens_for(engine, "handle_error")
    def _commit_failed(context: ExceptionContext) -> BaseException | None:
        conn = context.connection
        # SQLAlchemy passes no statement and no execution context for a failed COMMIT
        if conn is None or context.statement is not None or context.execution_context:
            return None
        if not conn.info.pop(_COMMITTING, False):
            return None
        try:  # lazily: a psycopg2 or asyncpg engine does not load psycopg for nothing
            from neon_connect.commit_outcome import is_commit_outcome_unknown, outcome_unknown
        except ImportError:
            return None
        orig = context.original_exception
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
