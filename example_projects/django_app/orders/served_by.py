"""Which endpoint served this connection? Asked of PostgreSQL, not of our settings.

``inet_client_port()`` is the port of whoever connected to PostgreSQL. When it is our own
socket's port nothing sat in between (direct); through PgBouncer it is PgBouncer's.
"""

from __future__ import annotations

import socket
from typing import Any


def served_by(connection: Any) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT inet_client_port()")
        (seen,) = cursor.fetchone()
    with socket.fromfd(connection.connection.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        local = sock.getsockname()[1]
    return "direct" if seen == local else "pooled"
