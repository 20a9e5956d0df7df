"""``NEON_DIRECT_COMMANDS``: other apps' commands that must run on the direct endpoint.

Django builds a command by calling ``<app>.management.commands.<name>.Command()``, so the
listed commands get that attribute replaced by a direct-routing subclass (once; the
built-in ones are overridden by ``neon_django``'s own command modules instead).
"""

from __future__ import annotations

from importlib import import_module

from django.core.management import get_commands

from .conf import conf
from .routing import runs_direct

__all__ = ["install_direct_commands"]


def install_direct_commands() -> list[str]:
    """Wrap each command named in ``NEON_DIRECT_COMMANDS``; returns the names wrapped."""
    known = get_commands()
    wrapped = []
    for name in conf.NEON_DIRECT_COMMANDS:
        app_name = known.get(name)
        if app_name is None:
            continue  # reported by check neon_django.W004
        module = import_module(f"{app_name}.management.commands.{name}")
        module.Command = runs_direct(module.Command)  # type: ignore[attr-defined]
        wrapped.append(name)
    return wrapped
