from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from resilience.worker_site.tasks import record


class Command(BaseCommand):
    help = "Enqueue one record task per key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="+")

    def handle(self, *args: Any, **options: Any) -> None:
        for key in options["keys"]:
            record.enqueue(key)
