"""The fixture example of docs/testing.md, as a user's test would be written."""

from __future__ import annotations

from sqlalchemy import text

import neon_sqlalchemy


def test_my_view_on_a_real_pooler(neon_local, monkeypatch):
    for name, value in neon_local.env().items():
        monkeypatch.setenv(name, value)
    engine = neon_sqlalchemy.create_engine()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
