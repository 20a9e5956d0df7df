"""``manage.py neon_check``: ``neon-connect check`` for a Django alias, plus our system checks."""

from __future__ import annotations

from typing import Any

from django.core.checks import run_checks
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from neon_connect.check import Finding, Level, run_check
from neon_connect.urls import build_url, libpq_keywords


def _url(settings: dict[str, Any]) -> str:
    # OPTIONS also holds Django's and psycopg's own settings (pool, prepare_threshold...):
    # only libpq's keywords belong in a connection string.
    keywords = libpq_keywords()
    options = {
        k: str(v)
        for k, v in (settings.get("OPTIONS") or {}).items()
        if k in keywords and v is not None
    }
    return build_url(
        host=settings["HOST"],
        port=int(settings.get("PORT") or 5432),
        user=settings.get("USER") or None,
        password=settings.get("PASSWORD") or None,
        database=settings.get("NAME") or None,
        params=options,
    )


class Command(BaseCommand):
    help = "Connect to the alias's pooled and direct endpoints and flag Neon pitfalls."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="the alias to check")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, database: str, json: bool, **options: Any) -> None:
        settings = connections[database].settings_dict
        if not settings.get("HOST"):
            raise CommandError(f"DATABASES[{database!r}] has no HOST: use neon_django.config().")
        neon = settings.get("NEON") or {}
        direct = neon.get("DIRECT")
        app_url = _url(settings)
        if direct is None and neon.get("TRANSACTION_POOLER"):
            app_url += ("&" if "?" in app_url else "?") + "pgbouncer=true"
        report = run_check(
            app_url,
            direct_url=_url({**settings, **direct}) if direct else None,
            env={},
            allow_mismatched_endpoints=bool(neon.get("ALLOW_MISMATCHED_ENDPOINTS")),
        )
        labels = {
            "app": f"DATABASES[{database!r}]",
            "direct": f"DATABASES[{database!r}]['NEON']['DIRECT']",
        }
        for entry in report.endpoints:
            entry.source = labels.get(entry.role, entry.source)
        for message in run_checks():
            if message.id and message.id.startswith("neon_django."):
                level: Level = "error" if message.is_serious() else "warning"
                report.findings.append(
                    Finding(level, f"{message.id}: {message.msg}", message.hint or "")
                )
        self.stdout.write(report.to_json() if json else report.to_text())
        if not report.ok:
            raise CommandError("neon_check found problems (see above).")
