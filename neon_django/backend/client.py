"""``dbshell`` opens psql on the endpoint the connection is routed to (direct, from the command)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.backends.postgresql import client


class DatabaseClient(client.DatabaseClient):
    def runshell(self, parameters: Iterable[str]) -> None:
        route_settings = getattr(self.connection, "neon_route_settings", None)
        if route_settings is None:  # pragma: no cover - only used with our wrapper
            super().runshell(parameters)
            return
        original = self.connection.settings_dict
        self.connection.settings_dict = route_settings()
        try:
            super().runshell(parameters)
        finally:
            self.connection.settings_dict = original
