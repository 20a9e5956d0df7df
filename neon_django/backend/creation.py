"""Test databases are created, cloned, migrated and dropped on the direct endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.backends.postgresql import creation

if TYPE_CHECKING:
    from .base import DatabaseWrapper


class DatabaseCreation(creation.DatabaseCreation):
    connection: DatabaseWrapper

    def create_test_db(self, *args: Any, **kwargs: Any) -> str:
        with self.connection.neon_direct():
            return str(super().create_test_db(*args, **kwargs))

    def destroy_test_db(self, *args: Any, **kwargs: Any) -> None:
        with self.connection.neon_direct():
            super().destroy_test_db(*args, **kwargs)

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        # CREATE DATABASE ... TEMPLATE needs the template to itself, but PgBouncer keeps idle
        # server connections to it (from this run's tests or an earlier --keepdb run).
        self._close_idle_sessions(str(self.connection.settings_dict["NAME"]))
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        # The same idle server connections would make a plain DROP DATABASE fail with
        # "being accessed by other users".
        close_pool = getattr(self.connection, "close_pool", None)  # Django 5.1+
        if close_pool is not None:
            close_pool()
        with self.connection._nodb_cursor() as cursor:
            force = " WITH (FORCE)" if self._server_version(cursor) >= 130000 else ""
            cursor.execute(
                f"DROP DATABASE {self.connection.ops.quote_name(test_database_name)}{force}"
            )

    def _close_idle_sessions(self, database_name: str) -> None:
        """End this role's idle sessions on ``database_name`` (no superuser needed).

        A role may terminate its own backends; PgBouncer opens a new server connection when
        it next needs one. Sessions of other roles, and busy ones, are left alone.
        """
        self.connection.close()
        with self.connection._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND usename = current_user AND state = 'idle'"
                " AND pid <> pg_backend_pid()",
                [database_name],
            )

    @staticmethod
    def _server_version(cursor: Any) -> int:
        raw = cursor.connection
        return int(getattr(raw, "server_version", None) or raw.info.server_version)  # psycopg2 / 3
