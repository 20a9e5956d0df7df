"""``BEGIN`` travels with a transaction's first statement: one round trip, not two.

psycopg 3 opens a transaction by sending ``BEGIN`` alone and waiting for its answer before it
sends the first statement. When that statement can be written as complete text (client-side
binding, Django's default; or rendered as psycopg's ``ClientCursor`` would), both fit in one
simple-protocol message, ``BEGIN; <statement>``: PostgreSQL runs them in order, exactly as the
two messages would have run, and an error in the statement leaves the transaction failed, as
before. The cursor then moves past ``BEGIN``'s result, so it shows the statement's rows, row
count and text.

Everything else is psycopg's own path, ``BEGIN`` sent alone: autocommit, pipeline mode,
``executemany``, ``copy``, named cursors, binary results, prepared statements, a statement
longer than :data:`LONGEST` once written out, parameters psycopg cannot write as text, and a
psycopg that lacks the private attributes this reads (:data:`_READS`, present from 3.1 to 3.3).

Django installs :class:`neon_django.backend._begin_with_first_statement.BeginWithFirstStatement`
(its own client-side cursor); SQLAlchemy's engines install :class:`BeginWithFirstStatement` and
:class:`AsyncBeginWithFirstStatement` (server-side binding, with the first statement alone
written as text).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.pq import Format, TransactionStatus

_READS = ("_autocommit", "_get_tx_start_command", "_pipeline")
"""psycopg's private attributes this relies on; without them, psycopg's own path."""

LONGEST = 32 * 1024
"""Characters: a longer first statement (a bulk insert, a large ``bytea`` written as hex) goes
on psycopg's own path, where parameters travel apart, in binary where psycopg chooses it."""


def supported(connection: Any) -> bool:
    """Whether this psycopg connection has what the merge reads."""
    return all(hasattr(connection, name) for name in _READS)


def begin_to_merge(cursor: Any, kwargs: dict[str, Any]) -> str | None:
    """The ``BEGIN`` command psycopg is about to send alone before this statement, or None
    where it sends none (autocommit, a transaction already open) or the merge does not apply."""
    conn = cursor.connection
    if (
        kwargs.get("prepare") or kwargs.get("binary") or cursor.format == Format.BINARY
        or conn._autocommit  # noqa: SLF001 - psycopg's own flag, read as its execute does
        or conn._pipeline is not None  # noqa: SLF001
        or conn.pgconn.transaction_status != TransactionStatus.IDLE
    ):  # fmt: skip
        return None
    command: bytes = conn._get_tx_start_command()  # noqa: SLF001 - isolation, read only
    return command.decode()


@contextlib.contextmanager
def begin_held_back(connection: Any) -> Iterator[None]:
    """psycopg sends no ``BEGIN`` of its own meanwhile: it reads this flag before each
    statement. Set back after, directly: the public setter refuses inside a transaction."""
    connection._autocommit = True  # noqa: SLF001
    try:
        yield
    finally:
        connection._autocommit = False  # noqa: SLF001


def show_the_statement(cursor: Any, statement: str) -> None:
    """Move past ``BEGIN``'s result and show the statement's text (``cursor._query`` is what
    Django's query log and ``cursor.query`` read)."""
    cursor.nextset()
    query = cursor._query  # noqa: SLF001
    if query is not None:
        query.query = statement.encode(cursor.connection.info.encoding)


_WRITERS: dict[bool, Any] = {False: psycopg.ClientCursor, True: psycopg.AsyncClientCursor}
"""psycopg's client-side cursor for a sync (False) or async (True) connection."""


def _as_text(cursor: Any, query: Any, params: Any) -> str | None:
    """The statement as psycopg's ``ClientCursor`` would send it, or None where it is too long
    or has a parameter psycopg cannot write as text (psycopg's own path then sends it)."""
    try:  # with no parameters, the text as is (``%`` signs untouched), as psycopg sends it
        writer = _WRITERS[isinstance(cursor, psycopg.AsyncCursor)](cursor.connection)
        statement: str = writer.mogrify(query, params)
    except (psycopg.DataError, psycopg.ProgrammingError, psycopg.InterfaceError):
        return None  # an unknown type, a wrong count: psycopg's own path says so
    if len(statement) > LONGEST:
        return None
    return statement


class BeginWithFirstStatement(psycopg.Cursor[Any]):
    """psycopg's cursor (server-side binding), writing a transaction's first statement as text
    so that ``BEGIN`` travels in the same message; later statements bind on the server."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        begin = begin_to_merge(self, kwargs)
        statement = None if begin is None else _as_text(self, query, params)
        if statement is None:
            return super().execute(query, params, **kwargs)
        with begin_held_back(self.connection):
            super().execute(f"{begin}; {statement}", **kwargs)
        show_the_statement(self, statement)
        return self


class AsyncBeginWithFirstStatement(psycopg.AsyncCursor[Any]):
    """:class:`BeginWithFirstStatement` for psycopg's async connections."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        begin = begin_to_merge(self, kwargs)
        statement = None if begin is None else _as_text(self, query, params)
        if statement is None:
            return await super().execute(query, params, **kwargs)
        with begin_held_back(self.connection):
            await super().execute(f"{begin}; {statement}", **kwargs)
        show_the_statement(self, statement)
        return self


def install(connection: Any) -> None:
    """Give a new psycopg connection the merging cursor where it has psycopg's plain one (an
    app's own ``cursor_factory`` is left alone)."""
    if not supported(connection):
        return
    if connection.cursor_factory is psycopg.Cursor:
        connection.cursor_factory = BeginWithFirstStatement
    elif connection.cursor_factory is psycopg.AsyncCursor:
        connection.cursor_factory = AsyncBeginWithFirstStatement
