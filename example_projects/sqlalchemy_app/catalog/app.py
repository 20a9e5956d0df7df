"""A framework-free ASGI app on Neon's pooled endpoint (serve it with uvicorn).

GET /items  -> {"count", "served_by"}      POST /items {"name"} -> {"id", "served_by"}
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

import neon_sqlalchemy
from catalog.models import items

engine = neon_sqlalchemy.create_async_engine()  # pooled, NullPool, prepares off, from DATABASE_URL

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def served_by(conn: AsyncConnection) -> str:
    """'direct' when the backend running our statements is the one whose key we were given at
    login; through PgBouncer the client holds PgBouncer's own key (see the Django example's
    orders/served_by.py)."""
    pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
    raw = (await conn.get_raw_connection()).driver_connection
    login = raw.get_server_pid() if hasattr(raw, "get_server_pid") else raw.info.backend_pid
    return "direct" if pid == login else "pooled"


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await engine.dispose()
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] != "/items":
        await _respond(send, 404, {"error": "not found"})
        return
    if scope["method"] == "POST":
        name = json.loads(await _body(receive) or b"{}").get("name", "widget")
        async with engine.begin() as conn:
            new_id = (
                await conn.execute(items.insert().values(name=name).returning(items.c.id))
            ).scalar()
            where = await served_by(conn)
        await _respond(send, 201, {"id": new_id, "served_by": where})
        return
    async with engine.connect() as conn:
        count = (await conn.execute(sa.select(sa.func.count()).select_from(items))).scalar()
        where = await served_by(conn)
    await _respond(send, 200, {"count": count, "served_by": where})
