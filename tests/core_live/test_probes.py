"""The prepared-statement probe against the real stand-in, whichever PgBouncer it runs."""

from __future__ import annotations

import psycopg
import pytest

from neon_connect._probes import pooler_tracks_prepared_statements

pytestmark = pytest.mark.integration


def test_probe_matches_the_poolers_setting(neon_local):
    """1.24 with max_prepared_statements=1000: tracked; 1.18: names reach the server."""
    assert pooler_tracks_prepared_statements(neon_local.pooled_url) is (
        neon_local.tracks_prepared_statements
    )


def test_probe_on_postgresql_itself_sees_its_own_name(neon_local):
    assert pooler_tracks_prepared_statements(neon_local.direct_url) is False


def test_probe_leaves_nothing_prepared_behind(neon_local):
    for _ in range(3):
        pooler_tracks_prepared_statements(neon_local.pooled_url)
    # One open transaction per server connection of the pool: together they see every backend.
    conns = [psycopg.connect(neon_local.pooled_url) for _ in range(neon_local.pool_size)]
    try:
        names = [r[0] for c in conns for r in c.execute("SELECT name FROM pg_prepared_statements")]
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns}
    finally:
        for c in conns:
            c.close()
    assert len(pids) == neon_local.pool_size
    assert not [n for n in names if n.startswith("neon_connect_probe_")]


def test_probe_connection_errors_are_psycopg_errors(neon_local):
    with pytest.raises(psycopg.OperationalError):
        pooler_tracks_prepared_statements(neon_local.pooled_url.replace("neondb", "nope_db"))
