"""The recipes of the docs (session state, workers), called by tests/test_session_guard.py."""

from __future__ import annotations

from django.db import connections, transaction

import neon_django


def tenant_notes(schema, using="default"):
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SELECT set_config('search_path', %s, true)", [schema])
        cursor.execute("SELECT body FROM notes")
        return cursor.fetchall()


def run_as_singleton(key, work, using="default"):
    """Run ``work()`` only if no other worker holds the lock; it is held while work runs."""
    with neon_django.direct(using), connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:
            return False  # another worker has it
        try:
            work()
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return True
