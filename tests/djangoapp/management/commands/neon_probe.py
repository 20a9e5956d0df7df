"""A stand-in for a worker that needs a session: a ``neon_django.DirectCommand``."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection

from neon_django import DirectCommand
from tests.djangoapp.evidence import route


class Command(DirectCommand):
    help = "Print where the default connection goes."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(route(connection)))
