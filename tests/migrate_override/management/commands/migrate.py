"""A third-party app that overrides migrate, as some do (for check E001)."""

from __future__ import annotations

from django.core.management.commands.migrate import Command as MigrateCommand


class Command(MigrateCommand):
    pass
