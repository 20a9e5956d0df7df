"""A worker that ticks when told: one ``SELECT 1`` on the default alias per line on stdin,
one JSON line per tick on stdout (``ok``, the error the worker saw, the seconds it took).

The half-open scenarios (:mod:`resilience.half_open`) need ticks at chosen moments: one
before the link goes silent, one after the worker sat idle through the silence.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand

from resilience.worker_site.ticks import tick


class Command(BaseCommand):
    help = "Run SELECT 1 for each line on stdin; print each outcome as JSON."

    def handle(self, *args: Any, **options: Any) -> None:
        for _ in sys.stdin:
            started = time.monotonic()
            error = tick()
            outcome = {"ok": not error, "error": error, "seconds": time.monotonic() - started}
            print(json.dumps(outcome), flush=True)
