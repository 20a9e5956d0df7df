from __future__ import annotations

import json
import os

from django.apps import AppConfig
from django.db.models.signals import pre_migrate


class DjangoAppConfig(AppConfig):
    name = "tests.djangoapp"
    label = "djangoapp"

    def ready(self) -> None:
        pre_migrate.connect(_record_migrate_route, sender=self)


def _record_migrate_route(*, using: str, **kwargs: object) -> None:
    """Write where migrate's connection really goes, for tests that run it in a subprocess."""
    from django.db import connections

    from tests.djangoapp.evidence import route

    path = os.environ.get("NEON_TESTS_EVIDENCE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": "pre_migrate", **route(connections[using])}) + "\n")
