"""``make demo``: bring the stand-in up, run one query through each endpoint, bring it down.

The endpoint that served each query is read from the servers, not from our own flags:
PostgreSQL reports the port the client reached (``inet_server_port()``) and PgBouncer's
``SHOW STATS`` counts the transactions it forwarded.
"""

from __future__ import annotations

import sys
import time

from . import psycopg_params, resolve
from .local import running
from .urls import mask_url

__all__ = ["run_demo"]


def _say(text: str) -> None:
    print(text, flush=True)


def _pooler_xacts(admin_url: str) -> int:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        rows = admin.execute("SHOW STATS").fetchall()
    return sum(int(row[1]) for row in rows if row[0] == "neondb")


def run_demo() -> int:
    import psycopg

    started = time.monotonic()
    _say("Starting the local stand-in (PostgreSQL + PgBouncer, TLS + SCRAM)...")
    with running(pool_size=3) as state:
        _say(f"  up in {time.monotonic() - started:.1f}s")
        _say(f"  DATABASE_URL          = {mask_url(state.pooled_url)}")
        _say(f"  DATABASE_URL_UNPOOLED = {mask_url(state.direct_url)}")
        endpoints = resolve(env=state.env())
        for endpoint in (endpoints.app, endpoints.session()):
            before = _pooler_xacts(state.admin_url)
            with psycopg.connect(**psycopg_params(endpoint)) as conn:
                port, tls = conn.execute(
                    "SELECT inet_server_port(), current_setting('ssl')"
                ).fetchone()  # type: ignore[misc]
                conn.commit()
            via_pooler = _pooler_xacts(state.admin_url) - before
            route = "through PgBouncer" if via_pooler else "straight to PostgreSQL"
            _say(
                f"  {endpoint.kind:>6} endpoint {endpoint.display_host}: query served by PostgreSQL "
                f"port {port}, TLS {tls}; PgBouncer forwarded {via_pooler} transaction(s) -> {route}"
            )
    _say(f"Stand-in stopped. Demo finished in {time.monotonic() - started:.1f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo())
