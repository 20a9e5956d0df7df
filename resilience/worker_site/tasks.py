"""The one task: a ledger row per key, so a lost or doubled task shows in a count."""

from __future__ import annotations

from django.db import connection
from django_tasks import task


@task()
def record(key: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO worker_ledger (key) VALUES (%s)", [key])
