"""Send a block of code, or a whole management command, to the direct endpoint."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextlib import ContextDecorator
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS, connections

__all__ = ["direct", "direct_connection", "runs_direct"]

C = TypeVar("C", bound=type[BaseCommand])


@contextlib.contextmanager
def direct_connection(connection: Any) -> Iterator[Any]:
    """Route ``connection`` (a ``neon_django`` wrapper) to the direct endpoint for the block."""
    connection.neon_enter_direct()
    try:
        yield connection
    finally:
        connection.neon_exit_direct()


class direct(ContextDecorator):  # noqa: N801 - used like a function: with neon_django.direct():
    """Run the block's queries on ``using``'s direct endpoint, in this thread only.

    For code that needs a real session at run time: LISTEN/NOTIFY, session advisory locks,
    ``CREATE INDEX CONCURRENTLY``, temporary tables, ``SET``. On exit the next query goes
    through the pooler again. Nesting works. Entering or leaving with a transaction open on
    the alias raises ``TransactionManagementError`` instead of silently switching servers.
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS) -> None:
        self.using = using

    def _connection(self) -> Any:
        connection = connections[self.using]
        if not hasattr(connection, "neon_enter_direct"):
            raise ImproperlyConfigured(
                f"neon_django.direct(using={self.using!r}) needs DATABASES[{self.using!r}] = "
                "neon_django.config() (ENGINE 'neon_django.backend')."
            )
        return connection

    def __enter__(self) -> Any:
        connection = self._connection()
        connection.neon_enter_direct()
        return connection

    def __exit__(self, *exc_info: object) -> None:
        self._connection().neon_exit_direct()


def _neon_aliases() -> list[str]:
    return [alias for alias in connections if hasattr(connections[alias], "neon_enter_direct")]


def runs_direct(command_class: C) -> C:
    """A subclass of ``command_class`` whose whole run uses every alias's direct endpoint."""
    if getattr(command_class, "neon_runs_direct", False):
        return command_class

    class Command(command_class):  # type: ignore[valid-type,misc]
        neon_runs_direct = True

        def execute(self, *args: Any, **options: Any) -> Any:
            with contextlib.ExitStack() as stack:
                for alias in _neon_aliases():
                    stack.enter_context(direct_connection(connections[alias]))
                return super().execute(*args, **options)

        def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
            parser = super().create_parser(prog_name, subcommand, **kwargs)
            parser.description = (
                f"{parser.description or ''} [neon_django: runs on the direct endpoint]".strip()
            )
            return parser

    Command.__module__ = command_class.__module__
    Command.__qualname__ = command_class.__qualname__
    Command.__doc__ = command_class.__doc__
    return Command  # type: ignore[return-value]


def next_command(name: str) -> type[BaseCommand]:
    """The ``name`` command that Django would run if ``neon_django`` were not installed.

    Respects INSTALLED_APPS order, so an app listed after ``neon_django`` that also
    overrides the command keeps its behaviour (ours wraps it).
    """
    from django.apps import apps
    from django.core.management import load_command_class

    found = "django.core"
    seen_self = False
    for app_config in apps.get_app_configs():
        if app_config.name == "neon_django":
            seen_self = True
            continue
        if seen_self and _provides(app_config.name, name):
            found = app_config.name
            break
    return type(load_command_class(found, name))


@functools.cache
def _provides(app_name: str, command: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(f"{app_name}.management.commands.{command}") is not None
    except ModuleNotFoundError:
        return False
