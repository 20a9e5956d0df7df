"""Which PostgreSQL driver the suite's Django paths use: psycopg 3, or psycopg2 in the matrix.

The nox session ``psycopg2`` sets ``NEON_TESTS_DRIVER=psycopg2``. Django picks its driver once,
when its PostgreSQL backend is first imported, and prefers psycopg 3 whenever it can import
it. So for that one import psycopg 3 is hidden; the stand-in and the tests' own evidence
helpers keep using it afterwards. Tests that exercise psycopg 3 features through Django carry
the ``psycopg3_only`` marker and are deselected in that session.
"""

from __future__ import annotations

import os
import sys

DJANGO_DRIVER = os.environ.get("NEON_TESTS_DRIVER", "psycopg")
if DJANGO_DRIVER not in ("psycopg", "psycopg2"):
    raise RuntimeError(f"NEON_TESTS_DRIVER={DJANGO_DRIVER!r}: use 'psycopg' or 'psycopg2'")


def choose_django_driver() -> None:
    """Make Django's PostgreSQL backend load ``DJANGO_DRIVER`` (call before Django imports it)."""
    if DJANGO_DRIVER == "psycopg" or "django.db.backends.postgresql.base" in sys.modules:
        return
    hidden = {k: v for k, v in sys.modules.items() if k == "psycopg" or k.startswith("psycopg.")}
    for name in hidden:
        del sys.modules[name]
    sys.modules["psycopg"] = None  # type: ignore[assignment]  # import psycopg -> ImportError
    try:
        import django.db.backends.postgresql.base  # noqa: F401
    finally:
        del sys.modules["psycopg"]
        sys.modules.update(hidden)
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    assert not is_psycopg3, "Django still chose psycopg 3"
