"""Where did a Django connection really go? Asked of the servers, not of the adapter.

PostgreSQL's ``inet_client_port()`` is the port of whoever connected to it. If that equals
the local port of our own socket, and our socket's peer is PostgreSQL's own port, nothing sat
in between: the connection is direct. Through PgBouncer the server sees PgBouncer's port
instead. (The peer check matters: Linux may give PgBouncer's socket to PostgreSQL the same
local port as ours to PgBouncer, since the two go to different destinations.)
"""

from __future__ import annotations

import socket
from typing import Any


def route(connection: Any) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_client_port(), inet_server_port()")
        seen_port, server_port = cursor.fetchone()
    raw = connection.connection
    with socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        local_port, peer_port = sock.getsockname()[1], sock.getpeername()[1]
    return {
        "direct": seen_port == local_port and peer_port == server_port,
        "server_saw_port": seen_port,
        "local_port": local_port,
        "server_port": server_port,
    }
