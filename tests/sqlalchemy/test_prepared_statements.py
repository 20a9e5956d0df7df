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
from sqlalchemy import exc
from sqlalchemy.pool import NullPool

import neon_sqlalchemy
from neon_connect import asyncpg_params, resolve
from tests.sqlalchemy.test_engines import (
    PREPARE_ERRORS,
    QUERY,
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


async def _statement_cache_size(engine):
    """The size of asyncpg's own statement cache on a connection the engine opens."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        return raw.driver_connection._stmt_cache.get_max_size()


async def _statements_reused_across_transactions(engine):
    """20 connections at once, each running one statement in 10 transactions: a transaction
    pooler gives each transaction whichever server connection is free."""
    errors = []

    async def task():
        async with engine.connect() as conn:
            for i in range(10):
                try:
                    await conn.execute(QUERY, {"p": "pg_%", "n": i % 2})
                    await conn.commit()
                except exc.DBAPIError as e:
                    errors.append(e)
                    await conn.rollback()

    await asyncio.gather(*(task() for _ in range(20)))
    await engine.dispose()
    return errors


async def test_asyncpg_engine_prepared_statements_true(neon_local):
    """``prepared_statements=True`` reaches asyncpg too (``asyncpg_params`` keeps its statement
    cache): no errors and Binds counted where the pooler tracks statements, collisions where
    it passes names through (PgBouncer 1.18)."""
    engine = neon_sqlalchemy.create_async_engine(
        env=neon_local.env(), driver="asyncpg", prepared_statements=True
    )
    assert isinstance(engine.sync_engine.pool, NullPool)
    assert await _statement_cache_size(engine) == 100  # asyncpg's default
    binds = neon_local.prepared_statement_binds()
    errors = await _statements_reused_across_transactions(engine)
    if neon_local.tracks_prepared_statements:
        assert errors == []
        assert neon_local.prepared_statement_binds() > binds
    else:
        assert errors and all(
            isinstance(e.orig.__cause__, ASYNCPG_PREPARE_ERRORS) for e in errors
        ), {str(e)[:120] for e in errors}
        assert any("__asyncpg_stmt_" in str(e) for e in errors), {str(e)[:120] for e in errors}


async def test_asyncpg_engine_keeps_its_statement_cache_off_by_default(neon_local):
    """The control: without the declaration asyncpg caches nothing, on either pooler."""
    engine = neon_sqlalchemy.create_async_engine(env=neon_local.env(), driver="asyncpg")
    assert await _statement_cache_size(engine) == 0
    assert await _statements_reused_across_transactions(engine) == []


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
