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
import threading
from collections.abc import Callable
from typing import Any

from ._endpoints import Endpoint


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


_FOUND: dict[tuple[str, int, str | None, str | None], bool] = {}
_FOUND_LOCK = threading.Lock()


def pooler_probe_wanted(endpoint: Endpoint) -> bool:
    """True for an endpoint taken for plain PostgreSQL whose host does not tell: not a Neon
    host (``-pooler`` tells there, and Neon's proxy answers cancel keys of its own), not
    marked ``pgbouncer=true``."""
    return not endpoint.transaction_pooler and not endpoint.is_neon


def answers_like_transaction_pooler(
    endpoint: Endpoint, first: Any, connect: Callable[[], Any]
) -> bool:
    """Ask a live endpoint whether a transaction pooler answers it; once per process and
    endpoint (later calls give the first answer without a round trip).

    ``first`` is a new DBAPI connection (psycopg or psycopg2) with no transaction open, and
    ``connect()`` makes another. Two facts, the second only asked when the first holds:
    the backend pid the endpoint announced at startup (BackendKeyData) is not the server's
    ``pg_backend_pid()`` (a pooler made it up), and a second connection, opened while the
    first is still open but between its transactions, gets the first one's server backend
    (PgBouncer's transaction mode; in session mode the first keeps its server). Costs one
    ``SELECT`` on plain PostgreSQL. ``first`` is left with no transaction open.
    """
    key = (endpoint.host, endpoint.port, endpoint.user, endpoint.database)
    with _FOUND_LOCK:
        if key in _FOUND:
            return _FOUND[key]
    announced = _announced_pid(first)
    server = _server_pid(first)
    found = False
    if announced is not None and announced != server:
        second = connect()
        try:
            found = _server_pid(second) == server
        finally:
            second.close()
    with _FOUND_LOCK:
        _FOUND[key] = found
    return found


def lone_pooler_message(endpoint: Endpoint, *, where: str) -> str:
    """What to do when :func:`answers_like_transaction_pooler` said yes."""
    return (
        f"{where}: {endpoint.source} ({endpoint.display_host}) is taken for a PostgreSQL "
        "server, but a transaction pooler (PgBouncer) answers there: a client pool, "
        "server-side cursors and session state would break behind it. Add ?pgbouncer=true "
        f"to that URL ({endpoint.source}) and set DATABASE_URL_UNPOOLED to the server behind "
        "the pooler (for migrations); or point it at the server itself."
    )


def _announced_pid(conn: Any) -> int | None:
    info = getattr(conn, "info", None)  # psycopg 3, psycopg2 >= 2.8
    pid = getattr(info, "backend_pid", None)
    return int(pid) if pid is not None else None


def _server_pid(conn: Any) -> int:
    cursor = conn.cursor()
    try:
        cursor.execute("SELECT pg_backend_pid()")
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not getattr(conn, "autocommit", False):
        conn.rollback()  # end the transaction: a transaction pooler takes the server back
    return int(row[0])
