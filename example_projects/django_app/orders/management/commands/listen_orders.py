"""A worker that LISTENs for new orders: LISTEN needs a session, so it runs inside direct()."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connection

import neon_django
from orders.served_by import served_by


class Command(BaseCommand):
    help = "Print each new order id as it is NOTIFYed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
        parser.add_argument(
            "--timeout", type=float, default=None, help="stop after this many seconds"
        )

    def handle(self, *args: Any, count: int, timeout: float | None, **options: Any) -> None:
        with neon_django.direct():
            with connection.cursor() as cursor:
                cursor.execute("LISTEN orders")
                cursor.execute("SELECT pg_backend_pid()")
                (pid,) = cursor.fetchone()
            hello = {"listening": True, "pid": pid, "served_by": served_by(connection)}
            self.stdout.write(json.dumps(hello), ending="\n")
            self.stdout.flush()
            raw = connection.connection
            for notify in raw.notifies(timeout=timeout, stop_after=count or None):
                self.stdout.write(json.dumps({"order": int(notify.payload)}), ending="\n")
                self.stdout.flush()
