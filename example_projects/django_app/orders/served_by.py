"""Which endpoint served this connection? Asked of PostgreSQL, not of our settings.

``inet_client_port()`` is the port of whoever connected to PostgreSQL. When it is our own
socket's port, and our socket's peer is PostgreSQL's own port, nothing sat in between (direct);
through PgBouncer it is PgBouncer's. The peer check matters: Linux may give PgBouncer's socket
to PostgreSQL the same local port as ours to PgBouncer (they go to different destinations).
"""

from __future__ import annotations

import socket
from typing import Any


def served_by(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_client_port(), inet_server_port()")
        seen, server = cursor.fetchone()
    with socket.fromfd(connection.connection.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        local, peer = sock.getsockname()[1], sock.getpeername()[1]
    return "direct" if (seen, server) == (local, peer) else "pooled"
