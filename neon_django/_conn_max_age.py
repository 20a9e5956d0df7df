"""How long a Django connection to Neon lives: the ``conn_max_age="auto"`` rule, and the close
at the end of each ASGI request that keeps that rule safe under ASGI.

The numbers behind the rule are in docs/benchmarks.md (``make bench``): through the pooler a
Django request of 2 reads + 1 write pays 11 round trips with ``CONN_MAX_AGE=0`` and 6 with a
kept, health-checked connection (2.4x faster at 1 ms RTT, 5.5x the throughput at 64 clients).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neon_connect import Endpoint
from neon_connect._limits import MAX_CONNECTION_AGE
from neon_connect._platforms import detect_platform
from neon_connect._sigterm import at_rest


def serverless_platform(env: Mapping[str, str]) -> str | None:
    """The function platform ``env`` says this process runs on (one request per instance,
    frozen or thrown away between them), or None."""
    platform = detect_platform(env)
    return platform.name if platform is not None and platform.kind == "function" else None


def auto_conn_max_age(app: Endpoint, env: Mapping[str, str]) -> int:
    """``conn_max_age="auto"``: keep connections to a transaction pooler in long-running
    servers and elastic platforms, below Neon's 5-minute suspend (health checks go on with
    it); 0 in serverless functions (nothing is reused there) and on direct endpoints (a kept
    direct connection holds a whole server session)."""
    if app.transaction_pooler and serverless_platform(env) is None:
        return MAX_CONNECTION_AGE
    return 0


def close_after_asgi_request(sender: Any, **kwargs: Any) -> None:
    """``request_finished`` receiver: under ASGI, close the request's neon_django connections.

    Each ASGI request runs in a new context, and Django's connections belong to the context,
    so a kept connection is never reused by the next request: it stays open at the pooler
    until garbage collection. Django sends ``request_finished`` from ``response.close()`` in
    the request's context with the handler class as sender, so ``connections`` here are that
    request's. Under WSGI (any other sender) the thread's connection is kept.
    """
    from django.core.handlers.asgi import ASGIHandler
    from django.db import connections

    if not (isinstance(sender, type) and issubclass(sender, ASGIHandler)):
        return
    for connection in connections.all(initialized_only=True):
        if "NEON" in connection.settings_dict:
            connection.close()


def close_idle_at_sigterm(owner: object) -> None:
    """SIGTERM's closer (``neon_connect/_sigterm.py``): close this thread's connections of
    the aliases that asked, if released at a request's end and not used since. The handler
    interrupts the main thread anywhere, so a connection merely idle at the driver (between
    ``cursor()`` and ``execute()``, between a psycopg2 statement and its fetch, inside
    ``set_autocommit(False)``) is never closed here. Django's connections belong to their
    thread (or async context), so the others close when their request ends (the backend's
    ``close_if_unusable_or_obsolete``)."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        neon = connection.settings_dict.get("NEON")
        if (
            neon
            and neon.get("CLOSE_ON_SIGTERM")
            and connection.connection is not None
            and getattr(connection, "neon_released", False)
            and not connection.in_atomic_block
            and at_rest(connection.connection)
        ):
            connection.close()
