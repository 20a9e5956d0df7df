"""Test databases are created, migrated and dropped on the direct endpoint."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import creation


class DatabaseCreation(creation.DatabaseCreation):
    def create_test_db(self, *args: Any, **kwargs: Any) -> str:
        from neon_django.routing import direct_connection

        with direct_connection(self.connection):
            return str(super().create_test_db(*args, **kwargs))

    def destroy_test_db(self, *args: Any, **kwargs: Any) -> None:
        from neon_django.routing import direct_connection

        with direct_connection(self.connection):
            super().destroy_test_db(*args, **kwargs)

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        # PgBouncer keeps idle server connections to the test database after the run, and
        # they would make a plain DROP DATABASE fail with "being accessed by other users".
        close_pool = getattr(self.connection, "close_pool", None)  # Django 5.1+
        if close_pool is not None:
            close_pool()
        with self.connection._nodb_cursor() as cursor:
            raw = cursor.connection
            version = (
                getattr(raw, "server_version", None) or raw.info.server_version
            )  # psycopg2 / 3
            force = " WITH (FORCE)" if version >= 130000 else ""
            cursor.execute(
                f"DROP DATABASE {self.connection.ops.quote_name(test_database_name)}{force}"
            )
