"""A LISTEN-style worker: one direct() session for the whole run, a query per tick, one
line per tick on stdout ("ok" or the error), until stdin closes."""

from __future__ import annotations

import select
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection

from neon_django import DirectCommand


class Command(DirectCommand, BaseCommand):
    help = "Query once per tick on the direct endpoint until stdin closes."

    def handle(self, *args: Any, **options: Any) -> None:
        while not select.select([sys.stdin], [], [], 0)[0]:  # stdin readable: EOF, stop
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                line = "ok"
            except Exception as error:  # what the worker would see
                line = f"{type(error).__name__}: {error}".splitlines()[0]
            print(line, flush=True)
            time.sleep(0.1)
