"""The multi-tenant recipe of the README, called by tests/test_session_guard.py."""

from __future__ import annotations

from django.db import connections, transaction


def tenant_notes(schema, using="default"):
    with transaction.atomic(using=using), connections[using].cursor() as cursor:
        cursor.execute("SELECT set_config('search_path', %s, true)", [schema])
        cursor.execute("SELECT body FROM notes")
        return cursor.fetchall()
