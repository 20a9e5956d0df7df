"""How ``neon_django`` overrides a management command: a plain subclass of the next one.

Django runs the command module of the first app in INSTALLED_APPS that has one, so
``neon_django/management/commands/migrate.py`` defines ``Command`` as a subclass of the
``migrate`` that Django would run without us: the next app's override below ``neon_django``
(whitenoise does the same for ``runserver``), else Django's own. The subclass routes only
the alias the command works on (its ``--database``) and works from ``manage.py`` and
``call_command()`` alike.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from django.apps import apps
from django.core.management import load_command_class
from django.core.management.base import BaseCommand, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

DIRECT_COMMANDS = ("migrate", "dbshell")
"""The commands ``neon_django`` overrides: the ones that need a real session.

``migrate`` runs non-atomic migrations (``CREATE INDEX CONCURRENTLY``, ``SET``, advisory
locks) and holds the migration lock; ``dbshell`` opens an interactive session. Commands that
need no session (``makemigrations``, ``sqlmigrate``, ``flush``, ...) run where Django runs them.
"""


class DirectCommand(BaseCommand):
    """Base for a command whose run goes to its ``--database`` alias's direct endpoint.

    With a transaction open on that alias (a ``TestCase``, an ``atomic()`` block around
    ``call_command()``) the command runs on the connection that holds it, as Django would.
    Other aliases keep their routing. Subclass it before the command class you extend:
    ``class Command(DirectCommand, OtherCommand)``.
    """

    def execute(self, *args: Any, **options: Any) -> Any:
        connection = connections[options.get("database") or DEFAULT_DB_ALIAS]
        if not hasattr(connection, "neon_direct"):  # not a neon_django alias
            return super().execute(*args, **options)
        with connection.neon_direct():
            return super().execute(*args, **options)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.description = (
            f"{parser.description or ''} [neon_django: runs on the direct endpoint]".strip()
        )
        return parser


def next_command(name: str) -> type[BaseCommand]:
    """The ``name`` command that Django would run if ``neon_django`` were not installed.

    Respects INSTALLED_APPS order, so an app listed after ``neon_django`` that also overrides
    the command keeps its behaviour (ours extends it).
    """
    found = "django.core"
    seen_self = False
    for app_config in apps.get_app_configs():
        if app_config.name == "neon_django":
            seen_self = True
        elif seen_self and provides(app_config.name, name):
            found = app_config.name
            break
    return type(load_command_class(found, name))


@functools.cache
def provides(app_name: str, command: str) -> bool:
    """True when app ``app_name`` has a ``command`` management command."""
    try:
        return importlib.util.find_spec(f"{app_name}.management.commands.{command}") is not None
    except ModuleNotFoundError:
        return False
