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

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> str:
        if not keepdb:
            # Django replaces a test database left by an earlier run (--keepdb, --reuse-db, a
            # run that died) with a plain DROP DATABASE, which PgBouncer's idle server
            # connections to it make fail with "being accessed by other users".
            name = self._get_test_db_name()  # type: ignore[attr-defined]  # not in the stubs
            self._end_sessions(name, idle_only=False)
        return str(super()._create_test_db(verbosity, autoclobber, keepdb))  # type: ignore[misc]

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        # CREATE DATABASE ... TEMPLATE needs the template to itself, but PgBouncer keeps idle
        # server connections to it (from this run's tests or an earlier --keepdb run); a clone
        # left by an earlier run is replaced with a plain DROP DATABASE, as above.
        names = [str(self.connection.settings_dict["NAME"])]
        if not keepdb:
            names.append(str(self.get_test_db_clone_settings(suffix)["NAME"]))
        self._end_sessions(*names)
        super()._clone_test_db(suffix, verbosity, keepdb)  # type: ignore[misc]

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        # PgBouncer's idle server connections, and any session a failed run left, would make
        # a plain DROP DATABASE fail with "being accessed by other users". They are ended
        # first; not with DROP ... WITH (FORCE), which refuses to end an autovacuum worker
        # unless the role may signal every backend, while a plain DROP waits for those.
        close_pool = getattr(self.connection, "close_pool", None)  # Django 5.1+
        if close_pool is not None:
            close_pool()
        self._end_sessions(test_database_name, idle_only=False)
        with self.connection._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE {self.connection.ops.quote_name(test_database_name)}")

    def _end_sessions(self, *database_names: str, idle_only: bool = True) -> None:
        """End this role's sessions (idle ones only, unless told) on these databases.

        A role may terminate its own backends without being superuser; PgBouncer opens a new
        server connection when it next needs one. Other roles' sessions are left alone.
        """
        self.connection.close()
        with self.connection._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = ANY(%s) AND usename = current_user"
                " AND (state = 'idle' OR NOT %s) AND pid <> pg_backend_pid()",
                [list(database_names), idle_only],
            )
