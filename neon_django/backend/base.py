"""A PostgreSQL backend that chooses the pooled or the direct endpoint each time it connects.

Everything else is Django's own PostgreSQL backend. The choice is per connection object, and
Django keeps one connection object per thread (and async context), so routing one thread to
the direct endpoint never moves another.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.db.transaction import TransactionManagementError

from neon_connect import Endpoint, RetryPolicy

from .client import DatabaseClient
from .creation import DatabaseCreation

__all__ = ["DatabaseWrapper"]


class DatabaseWrapper(base.DatabaseWrapper):
    client_class = DatabaseClient
    creation_class = DatabaseCreation

    def __init__(self, settings_dict: dict[str, Any], alias: str = "default") -> None:
        super().__init__(settings_dict, alias)
        self.neon_direct_depth = 0
        self.neon_connected_direct: bool | None = None

    # -- routing --------------------------------------------------------------------------

    @property
    def neon(self) -> dict[str, Any]:
        """The ``NEON`` entry that ``neon_django.config()`` put in the settings (read live)."""
        neon: dict[str, Any] = self.settings_dict.get("NEON") or {}
        return neon

    @property
    def neon_wants_direct(self) -> bool:
        """True when the next connection should go to the direct endpoint."""
        if not self.neon.get("DIRECT"):
            return False  # one endpoint serves both roles, or none is known
        # Creating and dropping databases needs a session, and PgBouncer may not serve 'postgres'.
        return self.neon_direct_depth > 0 or self.alias == NO_DB_ALIAS

    def neon_route_settings(self) -> dict[str, Any]:
        """``settings_dict`` with the direct endpoint's connection values when routed direct."""
        if not self.neon_wants_direct:
            return self.settings_dict
        direct = self.neon["DIRECT"]
        return {
            **self.settings_dict,
            **{key: direct[key] for key in ("HOST", "PORT", "USER", "PASSWORD", "OPTIONS")},
        }

    def neon_enter_direct(self) -> None:
        self._neon_refuse_in_transaction("enter")
        if (
            self.neon_direct_depth == 0
            and self.connection is not None
            and not self.neon_connected_direct
        ):
            self.close()
        self.neon_direct_depth += 1

    def neon_exit_direct(self) -> None:
        self._neon_refuse_in_transaction("leave")
        self.neon_direct_depth -= 1
        if (
            self.neon_direct_depth == 0
            and self.connection is not None
            and self.neon_connected_direct
        ):
            self.close()  # the next query reconnects through the pooler

    def _neon_refuse_in_transaction(self, verb: str) -> None:
        in_transaction = self.in_atomic_block or (
            self.connection is not None and not self.get_autocommit()
        )
        if in_transaction:
            raise TransactionManagementError(
                f"Cannot {verb} neon_django.direct(using={self.alias!r}) inside a transaction: "
                "the switch would silently move the rest of it to another server. Move the "
                "atomic() block inside (or outside) the direct() block."
            )

    # -- connecting -----------------------------------------------------------------------

    def get_connection_params(self) -> dict[str, Any]:
        direct = self.neon_wants_direct
        if direct:
            original = self.settings_dict
            self.settings_dict = self.neon_route_settings()
            try:
                params: dict[str, Any] = super().get_connection_params()
            finally:
                self.settings_dict = original
        else:
            params = super().get_connection_params()
            neon = self.neon
            if (
                neon.get("TRANSACTION_POOLER")
                and not neon.get("PREPARED_STATEMENTS")
                and is_psycopg3
            ):
                params["prepare_threshold"] = None  # whatever OPTIONS say: the pooler mixes clients
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        direct = self.neon_wants_direct
        connect = super().get_new_connection
        policy = RetryPolicy(timeout=float(self.neon.get("RETRY_TIMEOUT", 15.0)))
        connection = policy.call(
            lambda: connect(conn_params), endpoint=self._neon_endpoint(conn_params, direct)
        )
        self.neon_connected_direct = direct
        return connection

    def _neon_endpoint(self, conn_params: dict[str, Any], direct: bool) -> Endpoint:
        """A description of where we connect, for retry logs and error notes."""
        pooled = not direct and bool(self.neon.get("TRANSACTION_POOLER"))
        return Endpoint(
            kind="pooled" if pooled else "direct",
            host=str(conn_params.get("host", "")),
            port=int(conn_params.get("port") or 5432),
            user=conn_params.get("user"),
            password=conn_params.get("password"),
            database=conn_params.get("dbname"),
            params={},
            transaction_pooler=pooled,
            source=f"settings.DATABASES[{self.alias!r}]",
        )

    def close(self) -> None:
        super().close()
        if self.connection is None:
            self.neon_connected_direct = None
