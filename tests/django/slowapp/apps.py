from __future__ import annotations

import os
import sys
from typing import Any

from django.apps import AppConfig
from django.db.models.signals import pre_migrate


class SlowAppConfig(AppConfig):
    name = "tests.django.slowapp"

    def ready(self) -> None:
        if os.environ.get("NEON_TESTS_GO_AT") == "pre_migrate":
            pre_migrate.connect(_wait_for_go, sender=self)


def _wait_for_go(**kwargs: Any) -> None:
    """Every run has planned its migrations (none applied yet) before any of them applies."""
    print("ready", flush=True)
    sys.stdin.readline()
