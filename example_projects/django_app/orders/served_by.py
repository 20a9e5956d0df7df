"""Which endpoint served this connection? Asked of PostgreSQL, not of our settings.

At login a client is given the key of the process that serves it (``BackendKeyData``: its
pid). Straight to PostgreSQL, that is the backend running our statements: ``pg_backend_pid()``
matches it, even through a relay that passes the server's key on (the stand-in's Neon-like
proxy). Through PgBouncer the client holds PgBouncer's own key, and the statements run on a
server connection of PgBouncer's, so the two differ. Neon's own proxy hands out keys of its
own, so against Neon this says "pooled" for both endpoints: it is evidence for the stand-in.
"""

from __future__ import annotations

from typing import Any


def served_by(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return "direct" if pid == connection.connection.info.backend_pid else "pooled"
