"""``prepared_statements=True`` and asyncpg's statement cache, on both poolers.

On PgBouncer >= 1.22 with ``max_prepared_statements`` (Neon's pooled endpoint, the stand-in's
default) the collision scenarios give zero errors while statements really are prepared (the
pooler counts their Binds). On PgBouncer 1.18 (``NEON_LOCAL_PGBOUNCER=/usr/sbin/pgbouncer``)
the same engines fail as documented: the option is a declaration about the pooler.
Controls without the adapter are in ``test_engines.py``.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.pool import NullPool

import neon_sqlalchemy
from neon_connect import asyncpg_params, resolve
from tests.sqlalchemy.test_engines import (
    PREPARE_ERRORS,
    _fifty_tasks,
    _same_statement_on_several_backends,
)

pytestmark = pytest.mark.integration
ASYNCPG_PREPARE_ERRORS = (
    asyncpg.exceptions.DuplicatePreparedStatementError,
    asyncpg.exceptions.InvalidSQLStatementNameError,
    asyncpg.exceptions.ProtocolViolationError,
)


def test_psycopg_prepared_statements_true(neon_local):
    engine = neon_sqlalchemy.create_engine(env=neon_local.env(), prepared_statements=True)
    binds = neon_local.prepared_statement_binds()
    try:
        assert isinstance(engine.pool, NullPool)
        errors = _same_statement_on_several_backends(engine, neon_local)
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.prepare_threshold == 5  # psycopg's default
    finally:
        engine.dispose()
    if neon_local.tracks_prepared_statements:
        assert errors == []
        assert neon_local.prepared_statement_binds() > binds
    else:
        assert errors and all(isinstance(e, PREPARE_ERRORS) for e in errors), errors
        assert any("_pg3_" in str(e) for e in errors)


async def test_asyncpg_engine_prepared_statements_true_prepares_nothing(neon_local):
    """Today ``prepared_statements=True`` changes nothing for asyncpg: ``asyncpg_params`` sets
    ``statement_cache_size=0`` on a pooled endpoint either way, and asyncpg's ``prepare()``
    (which SQLAlchemy's statement cache uses) then sends unnamed statements. So no collisions
    on either pooler, and no named statements (no Binds counted) on the one that tracks them."""
    engine = neon_sqlalchemy.create_async_engine(
        env=neon_local.env(), driver="asyncpg", prepared_statements=True
    )
    binds = neon_local.prepared_statement_binds()
    assert await _fifty_tasks(engine) == []
    assert neon_local.prepared_statement_binds() == binds


async def _asyncpg_tasks(neon_local, *, statement_cache_size):
    """asyncpg itself (no SQLAlchemy): 20 tasks, each a connection running one query 10 times."""
    params = asyncpg_params(resolve(env=neon_local.env()).app)
    params["statement_cache_size"] = statement_cache_size
    errors: list[BaseException] = []

    async def task(n):
        conn = await asyncpg.connect(**params)
        try:
            for i in range(10):
                try:
                    await conn.fetchval(
                        "SELECT count(*) FROM pg_class WHERE relpages >= $1", (n + i) % 3
                    )
                except ASYNCPG_PREPARE_ERRORS as exc:
                    errors.append(exc)
        finally:
            await conn.close()

    await asyncio.gather(*(task(n) for n in range(20)))
    return errors


async def test_asyncpg_statement_cache(neon_local):
    """asyncpg's own cache (default 100 statements): safe only where the pooler tracks it."""
    assert await _asyncpg_tasks(neon_local, statement_cache_size=0) == []
    binds = neon_local.prepared_statement_binds()
    errors = await _asyncpg_tasks(neon_local, statement_cache_size=100)
    if neon_local.tracks_prepared_statements:
        assert errors == []
        assert neon_local.prepared_statement_binds() > binds
    else:
        assert errors, "expected asyncpg's cached statements to collide on PgBouncer 1.18"
        assert any("__asyncpg_stmt_" in str(e) for e in errors), {str(e)[:120] for e in errors}
