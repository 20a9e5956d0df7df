"""A stand-in for a worker that needs a session (listed in NEON_DIRECT_COMMANDS)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection

from tests.djangoapp.evidence import route


class Command(BaseCommand):
    help = "Print where the default connection goes."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(route(connection)))
