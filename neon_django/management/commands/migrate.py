"""``migrate`` on the direct endpoint of ``--database``, one run at a time.

Two deploys that migrate at once would both find the same migrations unapplied and both
apply them (``IntegrityError: duplicate key value violates unique constraint
"pg_type_typname_nsp_index"``). So the run holds a session advisory lock on the direct
endpoint, :data:`MIGRATION_LOCK_KEY`: a second run waits, then finds nothing to do. The lock
is released when the command ends, also when it fails (and PostgreSQL drops it with the
session if the process dies). ``--no-migration-lock`` skips it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.core.management.base import CommandParser
from django.db import DatabaseError, connections

from neon_connect._migration_lock import MIGRATION_LOCK_KEY
from neon_django.management._overrides import DirectCommand, next_command

if TYPE_CHECKING:
    from django.core.management.commands.migrate import Command as NextCommand
else:
    NextCommand = next_command("migrate")

__all__ = ["Command"]


class Command(DirectCommand, NextCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--no-migration-lock",
            action="store_true",
            help="Don't wait for other migrate runs (neon_django's advisory lock).",
        )

    def handle(self, *args: Any, **options: Any) -> Any:
        if options["no_migration_lock"]:
            return super().handle(*args, **options)

        def waiting() -> None:
            if options["verbosity"] >= 1:
                self.stdout.write("Waiting for another migrate run to finish (migration lock)...")

        with migration_lock(connections[options["database"]], on_wait=waiting):
            return super().handle(*args, **options)


@contextlib.contextmanager
def migration_lock(connection: Any, *, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold :data:`MIGRATION_LOCK_KEY` on ``connection`` for the block.

    A session lock on a session (the direct endpoint); inside an open transaction a
    transaction lock, which ends with it. Nothing through a transaction pooler, where a
    session lock would be stranded on a random server connection.
    """
    if not hasattr(connection, "neon_direct"):  # not a neon_django alias
        yield
        return
    connection.ensure_connection()
    if connection.neon_in_transaction():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK_KEY])
        yield
        return
    if not connection.neon_connected_direct and connection.neon_transaction_pooler:
        yield  # no direct endpoint known (check neon_django.W002)
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        if not cursor.fetchone()[0]:
            on_wait()
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
    try:
        yield
    finally:
        _unlock(connection)


def _unlock(connection: Any) -> None:
    if connection.connection is None:
        return  # the session ended, and the lock with it
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
    except DatabaseError:
        connection.close()  # a broken session: closing it releases the lock
