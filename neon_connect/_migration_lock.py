"""The advisory lock that migration runs queue on, whichever tool runs them.

Django's ``migrate`` (neon_django) and Alembic's plugin (neon_sqlalchemy) hold the same
session lock on the direct endpoint, so a Django deploy and an Alembic deploy on one database
wait for each other instead of migrating at once.
"""

from __future__ import annotations

import hashlib

MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"neon_django.migrate").digest()[:8], "big", signed=True
)
"""8115083717416671789: a stable 64-bit key, per database (Django's since the first release)."""
