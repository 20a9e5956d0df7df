"""A worker loop outside the request cycle: a query per tick on the default alias, one line
per tick on stdout (``ok`` or the error the worker saw), until stdin closes."""

from __future__ import annotations

import select
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand

from resilience.worker_site.ticks import tick


class Command(BaseCommand):
    help = "Query once per tick until stdin closes; print each tick's outcome."

    def handle(self, *args: Any, **options: Any) -> None:
        while not select.select([sys.stdin], [], [], 0)[0]:  # readable stdin: EOF, stop
            print(tick() or "ok", flush=True)
            time.sleep(0.1)
