"""``BEGIN`` travels with a transaction's first statement: one round trip, not two.

psycopg 3 opens a transaction by sending ``BEGIN`` alone and waiting for its answer before it
sends the first statement. Under client-side binding, Django's default with psycopg 3, that
statement is complete text, so both fit in one simple-protocol message, ``BEGIN; <statement>``:
PostgreSQL runs them in order, exactly as the two messages would have run, and an error in the
statement leaves the transaction failed, as before. The cursor then moves past ``BEGIN``'s
result, so it shows the statement's rows, row count and text.

Everything else is psycopg's own path, ``BEGIN`` sent alone: server-side binding
(``OPTIONS={"server_side_binding": True}``), pipeline mode, ``executemany``, ``copy``, named
cursors, binary results, and a psycopg that lacks the attributes this reads.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base
from psycopg import Connection

DjangoCursor: Any = base.Cursor
"""Django's cursor for client-side binding (psycopg 3 only; untyped in the stubs)."""

_IDLE = 0
"""libpq's ``PQTRANS_IDLE``: no transaction open, so psycopg would send ``BEGIN`` first."""

_READS = ("_autocommit", "_get_tx_start_command", "_pipeline")
"""psycopg's private attributes this relies on (3.1 to 3.3); without them, psycopg's path."""


def _supported(connection: Connection[Any]) -> bool:
    return all(hasattr(connection, name) for name in _READS)


class BeginWithFirstStatement(DjangoCursor):  # type: ignore[misc]
    """Django's client-side-binding cursor, sending ``BEGIN`` with the first statement."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        conn = self.connection
        if (
            kwargs.get("prepare") or kwargs.get("binary")
            or conn._autocommit  # noqa: SLF001 - psycopg's own flag, read as its execute does
            or conn._pipeline is not None  # noqa: SLF001
            or conn.pgconn.transaction_status != _IDLE
        ):  # fmt: skip
            return super().execute(query, params, **kwargs)
        statement = self.mogrify(query, params)  # what psycopg would send, merged client-side
        begin = conn._get_tx_start_command().decode()  # noqa: SLF001 - isolation, read only
        # psycopg must not send its own BEGIN first: it reads this flag before each statement
        conn._autocommit = True  # noqa: SLF001
        try:
            super().execute(f"{begin}; {statement}", **kwargs)
        finally:
            conn._autocommit = False  # noqa: SLF001 - the public setter refuses in a transaction
        self.nextset()  # past BEGIN's result: the statement's rows and row count
        query_object = self._query  # what Django's query log reads (last_executed_query)
        if query_object is not None:
            query_object.query = statement.encode(conn.info.encoding)
        return self


def begin_with_first_statement(connection: Any) -> None:
    """Give a new psycopg 3 connection the merging cursor where Django chose client-side
    binding (its default), and leave it alone otherwise."""
    if connection.cursor_factory is DjangoCursor and _supported(connection):
        connection.cursor_factory = BeginWithFirstStatement
