"""A worker loop outside the request cycle: a query per tick on the default alias, one line
per tick on stdout (``ok`` or the error the worker saw), until stdin closes."""

from __future__ import annotations

import select
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection


class Command(BaseCommand):
    help = "Query once per tick until stdin closes; print each tick's outcome."

    def handle(self, *args: Any, **options: Any) -> None:
        while not select.select([sys.stdin], [], [], 0)[0]:  # readable stdin: EOF, stop
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                line = "ok"
            except Exception as error:  # what the worker would see
                line = f"{type(error).__name__}: {error}".splitlines()[0]
            print(line, flush=True)
            time.sleep(0.1)
