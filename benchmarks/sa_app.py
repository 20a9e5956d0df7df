"""A plain ASGI app (served by uvicorn) with one route per SQLAlchemy / driver configuration.

``BENCH_SA`` maps a configuration name to ``{"kind": ..., "url": ..., "direct_url": ...}``.
Every route does the same work as the Django view: two reads and a write, in one transaction,
on a connection checked out for the request (sync code runs in a 40-thread pool, like
FastAPI's default). Each configuration sets ``application_name`` to its own name.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import psycopg
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

import neon_sqlalchemy

READ_ONE = "SELECT EXISTS (SELECT 1 FROM bench_item WHERE id = :id)"
READ_TWO = "SELECT id, note FROM bench_item ORDER BY id DESC LIMIT 1"
WRITE = "INSERT INTO bench_item (note) VALUES (:note)"
ONE, NOTE = {"id": 1}, {"note": "hit"}
"""The values the Django view's ORM sends too (``filter(pk=1)``, ``create(note="hit")``)."""
PSYCOPG = {
    text: text.replace(":id", "%(id)s").replace(":note", "%(note)s")
    for text in (READ_ONE, READ_TWO, WRITE)
}
ASYNCPG = {
    text: text.replace(":id", "$1").replace(":note", "$1") for text in (READ_ONE, READ_TWO, WRITE)
}
"""The same statements in the drivers' own placeholders."""

Handler = Callable[[], Awaitable[None]]
_threads = ThreadPoolExecutor(40)


def _sa_url(url: str, driver: str) -> str:
    """What a user does by hand: swap the scheme; asyncpg wants ssl in connect_args instead."""
    scheme = f"postgresql+{driver}://"
    out = url.replace("postgresql://", scheme, 1)
    return out.split("?", 1)[0] if driver == "asyncpg" else out


def _sync(engine: sqlalchemy.Engine) -> Handler:
    def work() -> None:
        with engine.begin() as conn:
            conn.execute(text(READ_ONE), ONE).scalar()
            conn.execute(text(READ_TWO)).first()
            conn.execute(text(WRITE), NOTE)

    async def handle() -> None:
        await asyncio.get_running_loop().run_in_executor(_threads, work)

    return handle


def _async(engine: AsyncEngine) -> Handler:
    async def handle() -> None:
        async with engine.begin() as conn:
            (await conn.execute(text(READ_ONE), ONE)).scalar()
            (await conn.execute(text(READ_TWO))).first()
            await conn.execute(text(WRITE), NOTE)

    return handle


def _raw_psycopg(url: str, name: str) -> Handler:
    def work() -> None:
        with psycopg.connect(url, application_name=name) as conn:  # commits on exit
            conn.execute(PSYCOPG[READ_ONE], ONE).fetchone()
            conn.execute(PSYCOPG[READ_TWO]).fetchone()
            conn.execute(PSYCOPG[WRITE], NOTE)

    async def handle() -> None:
        await asyncio.get_running_loop().run_in_executor(_threads, work)

    return handle


def _raw_async_psycopg(url: str, name: str) -> Handler:
    async def handle() -> None:
        async with await psycopg.AsyncConnection.connect(url, application_name=name) as conn:
            await (await conn.execute(PSYCOPG[READ_ONE], ONE)).fetchone()
            await (await conn.execute(PSYCOPG[READ_TWO])).fetchone()
            await conn.execute(PSYCOPG[WRITE], NOTE)

    return handle


def _raw_asyncpg(url: str, name: str) -> Handler:
    async def handle() -> None:
        conn = await asyncpg.connect(
            url, statement_cache_size=0, server_settings={"application_name": name}
        )
        try:
            async with conn.transaction():
                await conn.fetchval(ASYNCPG[READ_ONE], ONE["id"])
                await conn.fetchrow(ASYNCPG[READ_TWO])
                await conn.execute(ASYNCPG[WRITE], NOTE["note"])
        finally:
            await conn.close()

    return handle


def handler(name: str, kind: str, url: str, direct_url: str) -> Handler:
    """One configuration, as its users write it. ``kind`` is ``<stack>_<variant>``."""
    env = {"DATABASE_URL": url, "DATABASE_URL_UNPOOLED": direct_url}
    stack, _, variant = kind.partition("_")
    driver = "asyncpg" if stack == "asyncpg" else "psycopg"
    if variant == "raw":
        raw = {"sync": _raw_psycopg, "async": _raw_async_psycopg, "asyncpg": _raw_asyncpg}
        return raw[stack](url, name)
    if driver == "asyncpg":
        app_name: dict[str, Any] = {"server_settings": {"application_name": name}}
    else:
        app_name = {"application_name": name}
    kwargs: dict[str, Any] = {"connect_args": app_name}
    if variant == "guide":
        if driver == "asyncpg":  # SQLAlchemy's "Prepared Statement Name with PGBouncer" recipe
            kwargs = {
                "poolclass": NullPool,
                "connect_args": {
                    **app_name,
                    "ssl": "require",
                    "statement_cache_size": 0,
                    "prepared_statement_cache_size": 0,
                    "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
                },
            }
        else:  # Neon's SQLAlchemy guide: the pooled URL, pre-ping, recycle under the suspend
            kwargs.update(pool_pre_ping=True, pool_recycle=300)
        if stack == "sync":
            return _sync(sqlalchemy.create_engine(_sa_url(url, driver), **kwargs))
        return _async(create_async_engine(_sa_url(url, driver), **kwargs))
    if variant == "pool":
        kwargs["allow_client_pool"] = True
    elif variant != "neon":
        raise ValueError(f"BENCH_SA: unknown kind {kind!r} for {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", neon_sqlalchemy.NeonClientPoolWarning)
        if stack == "sync":
            return _sync(neon_sqlalchemy.create_engine(env=env, **kwargs))
        return _async(neon_sqlalchemy.create_async_engine(env=env, driver=driver, **kwargs))  # type: ignore[arg-type]


_SPEC: dict[str, dict[str, str]] = json.loads(os.environ.get("BENCH_SA", "{}"))
ROUTES = {f"/sa/{name}": handler(name, **spec) for name, spec in _SPEC.items()}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    route = ROUTES.get(scope["path"])
    status, body = 404, b"no such configuration"
    if route is not None:
        try:
            await route()
            status, body = 200, b"ok"
        except Exception as exc:  # reported to the load generator as a failed request
            status, body = 500, type(exc).__name__.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
