"""Probes that ask a live endpoint how it behaves, instead of guessing from its version.

:func:`pooler_tracks_prepared_statements`: whether the pooler in front of PostgreSQL tracks
protocol-level prepared statements (PgBouncer >= 1.22 with ``max_prepared_statements`` > 0,
as Neon's pooled endpoint runs). Such a pooler renames every statement a client prepares to
its own name on the server (``PGBOUNCER_<n>``) and prepares it again on whichever server
connection the client gets next, so drivers' automatic prepares are safe. A pooler that does
not (PgBouncer < 1.22, or ``max_prepared_statements = 0``) hands the client's name to the
server as is, where another client's statement of the same name collides with it.
"""

from __future__ import annotations

import secrets
from typing import Any

__all__ = ["pooler_tracks_prepared_statements"]


def pooler_tracks_prepared_statements(conninfo: str = "", **params: Any) -> bool:
    """Prepare a uniquely named statement through the pooler and look for that name on the
    server, in the same transaction (so on the same server connection).

    ``True``: the server holds the statement under another name, so the pooler tracks prepared
    statements. ``False``: the server sees the client's name (an untracking pooler, or no
    pooler at all). Opens its own short connection (``conninfo`` / psycopg ``params``) and
    leaves nothing prepared behind. Connection errors propagate as psycopg errors.
    """
    import psycopg

    name = f"neon_connect_probe_{secrets.token_hex(6)}"
    with psycopg.connect(conninfo, **params, autocommit=True) as conn, conn.transaction():
        result = conn.pgconn.prepare(name.encode(), b"SELECT 1")
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise psycopg.OperationalError(
                "could not prepare the probe statement: "
                + (result.error_message or b"").decode(errors="replace").strip()
            )
        row = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = %s", (name,)
        ).fetchone()
        seen_as_sent = bool(row and row[0])
        if seen_as_sent:
            conn.execute(f'DEALLOCATE "{name}"')  # the server connection goes back to others
    return not seen_as_sent
