"""Tell a caller when a ``COMMIT`` may or may not have happened.

When the connection dies after ``COMMIT`` was sent and before its answer came back (the pooler
is killed, the server restarts, a compute suspends), the client cannot know the outcome. On the
stand-in, killing PgBouncer during a commit gave ``SSL error: unexpected eof while reading`` for
a transaction that *was* stored. A backend terminated around a commit shows up in psycopg as
``InternalError: received 2 results from command 'COMMIT'`` (PgBouncer relays the server's
``FATAL`` and then its own ``server conn crashed?``), which hides the real cause.

A connection found lost *before* ``COMMIT`` is sent (checked on the socket, no bytes sent)
is a certain outcome: the server ended the transaction, nothing of it is stored, and
:class:`CommitNotSent` says it is safe to run again. A worker stopped inside a transaction
while its server restarted met exactly that.

Retrying such a write blindly can double it; giving up can lose it. :class:`CommitOutcomeUnknown`
says so: check whether the write landed (by its key) or make it idempotent, then retry. A
``COMMIT`` refused by a healthy server (a serialization failure, a deferred constraint) leaves
the connection open and is a definite rollback: it is re-raised unchanged.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ._liveness import refuse_commit_if_lost
from ._retry import connection_lost


class CommitOutcomeUnknown(psycopg.OperationalError):
    """``COMMIT`` was sent and the connection was lost before its answer: the transaction
    may or may not be committed. The driver's error is the ``__cause__``."""


class CommitNotSent(psycopg.OperationalError):
    """``COMMIT`` was not sent: its connection was found lost first, so the server (or the
    pooler) had already ended the transaction. Nothing of it is stored: it is safe to run
    the whole transaction again on a new connection."""


NOT_SENT = (
    "the connection was lost before COMMIT was sent (a suspend, a restart or a pooler "
    "restart ended it inside the transaction), so nothing of the transaction was stored; "
    "run it again on a new connection"
)


_MESSAGE = (
    "the connection was lost during COMMIT, so the transaction may or may not be committed "
    "({cause}); check whether the write landed (e.g. by its key) or make it idempotent before "
    "retrying"
)


def is_commit_outcome_unknown(exc: BaseException, connection: Any) -> bool:
    """True when ``exc``, raised by ``connection.commit()``, leaves the outcome unknown.

    The sign is the connection itself: broken (or closed) after the failed commit. A server that
    refused the commit on a live connection has rolled back.
    """
    if isinstance(exc, CommitOutcomeUnknown):
        return True
    psycopg2_error = type(exc).__module__.partition(".")[0] == "psycopg2"
    if not (isinstance(exc, psycopg.Error) or psycopg2_error):
        return False
    return connection_lost(connection)


def outcome_unknown(exc: BaseException) -> CommitOutcomeUnknown:
    """The :class:`CommitOutcomeUnknown` to raise ``from exc`` (the adapters wrap it in turn)."""
    cause = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    return CommitOutcomeUnknown(_MESSAGE.format(cause=cause))


def commit(connection: psycopg.Connection[Any]) -> None:
    """``connection.commit()``, raising :class:`CommitOutcomeUnknown` when the outcome is lost,
    and :class:`CommitNotSent` when the connection was lost before ``COMMIT`` could be sent."""
    refuse_commit_if_lost(connection)
    try:
        connection.commit()
    except psycopg.Error as exc:
        if is_commit_outcome_unknown(exc, connection):
            raise outcome_unknown(exc) from exc
        raise


async def acommit(connection: psycopg.AsyncConnection[Any]) -> None:
    """The async twin of :func:`commit`."""
    refuse_commit_if_lost(connection)
    try:
        await connection.commit()
    except psycopg.Error as exc:
        if is_commit_outcome_unknown(exc, connection):
            raise outcome_unknown(exc) from exc
        raise
