from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import pre_migrate


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self) -> None:
        pre_migrate.connect(_say_where, sender=self)


def _say_where(*, using: str, verbosity: int = 1, **kwargs: Any) -> None:
    """Print where migrate's connection goes, as PostgreSQL sees it."""
    from django.db import connections

    from orders.served_by import served_by

    if verbosity >= 1:
        print(f"orders: migrating on the {served_by(connections[using])} endpoint")
