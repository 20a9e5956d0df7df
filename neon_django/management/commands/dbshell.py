"""``dbshell``: psql on the direct endpoint of ``--database`` (an interactive session)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from neon_django.management._overrides import DirectCommand, next_command

if TYPE_CHECKING:
    from django.core.management.commands.dbshell import Command as NextCommand
else:
    NextCommand = next_command("dbshell")


__all__ = ["Command"]


class Command(DirectCommand, NextCommand):
    pass
