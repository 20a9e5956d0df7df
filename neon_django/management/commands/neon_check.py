"""``manage.py neon_check``: ``neon-connect check`` for a Django alias, plus our system checks."""

from __future__ import annotations

from typing import Any

from django.core.checks import run_checks
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from neon_connect._check import check_endpoints
from neon_connect._rules import Finding, Level
from neon_django._config import neon_settings

__all__ = ["Command"]


class Command(BaseCommand):
    help = "Connect to the alias's pooled and direct endpoints and flag Neon pitfalls."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="the alias to check")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, database: str, json: bool, **options: Any) -> None:
        neon = neon_settings(connections[database].settings_dict)
        if neon is None:
            raise CommandError(
                f"DATABASES[{database!r}] was not built by neon_django.config(): use it, or run "
                "'neon-connect check --url ...' on the alias's URL."
            )
        report = check_endpoints(neon["ENDPOINTS"])  # what config() resolved, as it connects
        labels = {
            "app": f"DATABASES[{database!r}]",
            "direct": f"DATABASES[{database!r}]['NEON']['DIRECT']",
        }
        for entry in report.endpoints:
            entry.source = labels.get(entry.role, entry.source)
        for message in run_checks():
            if message.id and message.id.startswith("neon_django."):
                level: Level = "error" if message.is_serious() else "warning"
                report.findings.append(Finding(message.id, level, message.msg, message.hint or ""))
        self.stdout.write(report.to_json() if json else report.to_text())
        if not report.ok:
            raise CommandError("neon_check found problems (see above).")
