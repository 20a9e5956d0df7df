"""``NEON_DIRECT_COMMANDS``: other apps' commands that must run on the direct endpoint.

Django builds a command by calling ``<app>.management.commands.<name>.Command()``, so each
listed command's ``Command`` becomes a :class:`DirectCommand` subclass of itself (once).
"""

from __future__ import annotations

from importlib import import_module

from django.core.management import get_commands

from .conf import conf
from .management.overrides import DirectCommand

__all__ = ["install_direct_commands"]


def install_direct_commands() -> list[str]:
    """Route each command named in ``NEON_DIRECT_COMMANDS``; returns the names routed."""
    known = get_commands()
    routed = []
    for name in conf.NEON_DIRECT_COMMANDS:
        app_name = known.get(name)
        if app_name is None:
            continue  # reported by check neon_django.W004
        module = import_module(f"{app_name}.management.commands.{name}")
        command = module.Command
        if not issubclass(command, DirectCommand):
            module.Command = type("Command", (DirectCommand, command), {"__doc__": command.__doc__})  # type: ignore[attr-defined]
        routed.append(name)
    return routed
