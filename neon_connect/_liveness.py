"""Is a kept connection still alive? Asked without sending a byte.

When a server or a pooler closes a connection (a suspend, ``pg_terminate_backend``, a
PgBouncer restart), the socket turns readable: an end-of-file, or a ``FATAL`` that libpq
reads with ``PQconsumeInput``. So a ``poll()`` with no wait, then ``consume_input()`` while
the socket stays readable, then libpq's status, tells a dead connection from a live one with
no round trip. Django's health check and SQLAlchemy's pre-ping each cost one.

It cannot see everything: a half-open connection (the peer vanished without a FIN) or a FIN
still in flight look alive, which is why pgx went back from this check to a ping. There the
kernel answers, with the keepalives and ``tcp_user_timeout`` that ``psycopg_params`` sets: it
ends an idle half-open connection within 60 s, after which this check sees it, and a statement
sent into one fails within 60 s (``tests/resilience/test_half_open.py``). Where the driver gives no socket and no status (psycopg2 readable, unknown drivers)
the answer is :data:`UNSURE` and the caller pings.
"""

from __future__ import annotations

import enum
import select
from typing import Any


class Liveness(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"
    UNSURE = "unsure"


ALIVE, DEAD, UNSURE = Liveness.ALIVE, Liveness.DEAD, Liveness.UNSURE


def liveness(connection: Any) -> Liveness:
    """What the socket and the driver say of ``connection`` (psycopg 3, psycopg2, asyncpg)."""
    if connection is None:
        return DEAD
    pgconn = getattr(connection, "pgconn", None)
    if pgconn is not None:
        return _psycopg(connection, pgconn)
    is_closed = getattr(connection, "is_closed", None)
    if callable(is_closed):  # asyncpg: the event loop already saw any end-of-file
        return DEAD if is_closed() else ALIVE
    if getattr(connection, "closed", 0):  # psycopg2: non-zero once closed or found lost
        return DEAD
    fileno = getattr(connection, "fileno", None)
    if not callable(fileno):
        return UNSURE
    try:
        readable = _readable(fileno())
    except (OSError, ValueError):
        return DEAD
    # a kept psycopg2 connection has nothing to read unless the server spoke: a FATAL or
    # an end-of-file, most likely; a NOTICE or a NOTIFY is possible too, so ask with a ping
    return UNSURE if readable else ALIVE


def _psycopg(connection: Any, pgconn: Any) -> Liveness:
    if connection.closed or getattr(connection, "broken", False):
        return DEAD
    if pgconn.transaction_status == _ACTIVE:
        # a command still in progress at a use that starts afresh: libpq refuses to send
        # anything more ("another command is already in progress"), for good. Seen with
        # psycopg 3.2.1 on a worker's connection after a pooler restart.
        return DEAD
    try:
        fd = pgconn.socket  # psycopg's OperationalError when libpq has no socket any more
    except Exception:  # noqa: BLE001 - no socket is a dead connection, whatever the class
        return DEAD
    try:
        if not _readable(fd):  # the common case, at every use: one poll, nothing imported
            return ALIVE
        from psycopg import OperationalError, pq

        try:
            for _ in range(_READS):
                pgconn.consume_input()  # a FATAL, then the end-of-file: libpq marks it bad
                if pgconn.status != pq.ConnStatus.OK:
                    return DEAD
                if not _readable(fd):
                    return ALIVE
        except OperationalError:
            return DEAD
    except (OSError, ValueError):
        return DEAD
    return UNSURE  # still more to read: let a ping decide


def lost_before_commit(connection: Any) -> bool:
    """True when a psycopg 3 connection that holds a transaction is found lost before
    ``COMMIT`` is sent (no bytes sent): the server or the pooler ended that transaction, so
    nothing of it can be stored. False for other drivers, a closed connection and one with
    no transaction (where psycopg's ``commit()`` sends nothing)."""
    pgconn = getattr(connection, "pgconn", None)
    if pgconn is None or connection.closed or pgconn.transaction_status in (IDLE, _ACTIVE):
        return False  # ACTIVE: a command in progress; psycopg's own error says so
    return _psycopg(connection, pgconn) is DEAD


def refuse_commit_if_lost(connection: Any) -> None:
    """Raise :class:`neon_connect.CommitNotSent` instead of sending ``COMMIT`` on a connection
    found lost (:func:`lost_before_commit`): the one pre-check of every commit path."""
    if lost_before_commit(connection):
        # Imported here: it needs psycopg 3, which a connection found lost is (pgconn above).
        from ._commit_outcome import NOT_SENT, CommitNotSent

        raise CommitNotSent(NOT_SENT)  # nothing stored: safe to run again


IDLE, _ACTIVE = 0, 1
"""libpq's ``PQTRANS_IDLE`` (no transaction) and ``PQTRANS_ACTIVE`` (a command in progress),
as psycopg's ``pq.TransactionStatus`` and psycopg2's ``extensions.TRANSACTION_STATUS_*``
(named here: neither driver need be installed)."""

_READS = 3
"""How many reads before giving up on the socket: a FATAL and an end-of-file need two."""


def _readable(fd: int) -> bool:
    """Anything to read, an end-of-file or an error on ``fd``, without waiting.

    ``poll``, not ``select``: ``select`` refuses descriptors from 1024 up (``FD_SETSIZE``),
    which a server with many open files hands its connections, and every live connection
    there read as dead."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(0)
    if events and events[0][1] & select.POLLNVAL:
        raise OSError(f"file descriptor {fd} is not open")  # as select() refused it: dead
    return bool(events)
