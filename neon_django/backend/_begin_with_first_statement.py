"""``BEGIN`` travels with a transaction's first statement, on Django's psycopg 3 cursor.

Under client-side binding, Django's default with psycopg 3, each statement is complete text
already, so ``BEGIN; <statement>`` is sent as one message. The mechanism, and what stays on
psycopg's own path, is described in :mod:`neon_connect._begin_with_first_statement`; server-side
binding (``OPTIONS={"server_side_binding": True}``) is left alone.
"""

from __future__ import annotations

from typing import Any

import psycopg
from django.db.backends.postgresql import base

from neon_connect._begin_with_first_statement import (
    begin_held_back,
    begin_to_merge,
    never_ran,
    only_begin_ran,
    show_the_statement,
    supported,
)

DjangoCursor: Any = base.Cursor
"""Django's cursor for client-side binding (psycopg 3 only; untyped in the stubs)."""


class BeginWithFirstStatement(DjangoCursor):  # type: ignore[misc]
    """Django's client-side-binding cursor, sending ``BEGIN`` with the first statement."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        begin = begin_to_merge(self, kwargs)
        if begin is None:
            return super().execute(query, params, **kwargs)
        statement = self.mogrify(query, params)  # what psycopg would send, merged client-side
        try:
            with begin_held_back(self.connection):
                super().execute(f"{begin}; {statement}", **kwargs)
        except psycopg.Error as error:
            if only_begin_ran(self.connection, error, statement):
                self.connection.rollback()  # the empty transaction BEGIN opened
            elif not never_ran(self.connection, error):
                raise
            # nothing of the statement ran: fail as before, inside the transaction
            return super().execute(query, params, **kwargs)
        if not show_the_statement(self, statement):
            return super().execute(query, params, **kwargs)  # an empty statement
        return self


def begin_with_first_statement(connection: Any) -> None:
    """Give a new psycopg 3 connection the merging cursor where Django chose client-side
    binding (its default), and leave it alone otherwise."""
    if connection.cursor_factory is DjangoCursor and supported(connection):
        connection.cursor_factory = BeginWithFirstStatement
