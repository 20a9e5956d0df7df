"""One tick of the worker site's loops, shared by ``tick_loop`` and ``tick_on_line``."""

from __future__ import annotations

from django.db import connection


def tick() -> str:
    """One ``SELECT 1`` on the default alias: "" when it answered, else the first line of
    the error the worker saw."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # what the worker would see
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return ""
