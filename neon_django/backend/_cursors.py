"""Cursors that stop statements that would leak session state through a transaction pooler
(:mod:`neon_connect._session_guard`), and send a statement again when the pooler refused it
without forwarding it.

After a server restart PgBouncer answers a transaction's first statement with ``server login
has been failing`` for ``server_login_retry`` (15 s) and closes the client. The statement
never reached a server and no transaction was open, so the wrapper reconnects, in the same
transaction state, and sends it again (:meth:`DatabaseWrapper.neon_reconnect_refused`).
Execute wrappers and the debug query log see one query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.db.backends.postgresql.base import CursorDebugWrapper as DjangoDebugWrapper
from django.db.backends.utils import CursorWrapper as DjangoCursorWrapper
from django.db.utils import DatabaseError

from neon_connect import is_refused_before_forwarding
from neon_connect._retry import connection_lost, in_pipeline, opens_transaction

if TYPE_CHECKING:
    from .base import DatabaseWrapper

T = TypeVar("T")


class _RerunRefused:
    db: DatabaseWrapper
    cursor: Any

    def _execute(self, sql: Any, params: Any, *wrapper_args: Any) -> Any:
        self.db.neon_check_statement(sql)
        run = super()._execute  # type: ignore[misc]
        try:
            return self._neon_run(run, True, sql, params, *wrapper_args)
        except DatabaseError as error:
            self.db.neon_explain(error)
            raise

    def _executemany(self, sql: Any, param_list: Any, *wrapper_args: Any) -> Any:
        self.db.neon_check_statement(sql)
        run = super()._executemany  # type: ignore[misc]
        # in autocommit each row commits alone: a refusal can follow rows that ran
        try:
            return self._neon_run(run, not self.db.autocommit, sql, param_list, *wrapper_args)
        except DatabaseError as error:
            self.db.neon_explain(error)
            raise

    def _neon_rerunnable(self) -> bool:
        """Whether a refusal could be answered by sending the statement again: not for a
        named (server-side) cursor, tied to its connection; not in psycopg's pipeline mode,
        where an error can belong to an earlier queued statement; not from Django's own
        set-up or a ``connection_created`` receiver (the connect step handles those)."""
        db = self.db
        return (
            db.neon is not None
            and not db.neon_connecting
            and not getattr(self.cursor, "name", None)
            and not in_pipeline(db.connection)
        )

    def _neon_run(self, execute: Callable[..., T], allowed: bool, *args: Any) -> T:
        """``allowed``: False where sending again is never right (``executemany`` in
        autocommit); the rest is decided after an error, off the hot path."""

        def is_refusal(error: Exception) -> bool:
            return is_refused_before_forwarding(error, self.db.connection)

        # The residue of the liveness check: a pooler connection that dies between the check
        # and a transaction's first statement. Nothing of that transaction can have
        # committed, and a pooler connection holds no session: send it once more, anew.
        # Never in autocommit (the statement may have run), never on direct() (its session
        # ended: that is reported, not hidden). Only this is read before sending.
        opening = self.db.neon_pooled and opens_transaction(self.db.connection)
        try:
            return execute(*args)
        except DatabaseError as error:
            if not (allowed and self._neon_rerunnable()):
                raise
            refused: Exception = error
            if opening and connection_lost(self.db.connection) and not is_refusal(error):
                try:
                    return self._neon_again(execute, *args)
                except DatabaseError as second:
                    # a pooler that lost its server (a restart) refuses the new connection's
                    # statement for server_login_retry: wait that out as for any refusal
                    if not is_refusal(second):
                        raise
                    refused = second
            elif not is_refusal(error):
                raise

        def again() -> T:
            return self._neon_again(execute, *args)

        return self.db.neon_retry_policy().rerun_refused(
            again, refused=refused, is_refusal=is_refusal, endpoint=self.db.neon_endpoint()
        )

    def _neon_again(self, execute: Callable[..., T], *args: Any) -> T:
        """Send the statement on a new connection, in the same transaction state."""
        with self.db.wrap_database_errors:  # Django's errors, as from ensure_connection()
            self.db.neon_reconnect_refused()
        self.cursor = self.db.create_cursor()
        return execute(*args)


class CursorWrapper(_RerunRefused, DjangoCursorWrapper):
    pass


class CursorDebugWrapper(_RerunRefused, DjangoDebugWrapper):
    pass
