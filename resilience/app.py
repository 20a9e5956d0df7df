"""The ledger write as a web app, for the scenarios served by uvicorn.

``POST /write/async`` runs the write on ``neon_sqlalchemy.create_async_engine()`` and
``POST /write/sync`` on ``create_engine()`` (in a worker thread), both from ``DATABASE_URL``
and ``DATABASE_URL_UNPOOLED``. The answer is JSON: ``outcome`` (``acked``, ``connect``,
``tx`` or ``commit``: the step that failed), ``error`` and ``attempts`` (driver connect
attempts made for this request). Run: ``uvicorn resilience.app:app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import neon_sqlalchemy

from .load import INSERT, SLEEP, Client, CountingRetry, client_context, describe

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_engines: dict[str, Any] = {}
logging.getLogger("neon_connect").setLevel(logging.ERROR)  # retries are counted, not logged


def _engine(kind: str) -> Any:
    if kind not in _engines:
        factory = (
            neon_sqlalchemy.create_async_engine
            if kind == "async"
            else neon_sqlalchemy.create_engine
        )
        _engines[kind] = factory(retry=CountingRetry())
    return _engines[kind]


def _write_sync(run: str, key: str, number: int, sleep: float) -> dict[str, Any]:
    client = Client(number)
    with client_context(client):
        try:
            conn = _engine("sync").connect()
        except Exception as exc:
            return {"outcome": "connect", "error": describe(exc), "attempts": client.attempts}
        try:
            conn.execute(INSERT, {"run": run, "key": key, "client": number})
            if sleep:
                conn.execute(SLEEP, {"seconds": sleep})
        except Exception as exc:
            return {"outcome": "tx", "error": describe(exc), "attempts": client.attempts}
        else:
            try:
                conn.commit()
            except Exception as exc:
                return {"outcome": "commit", "error": describe(exc), "attempts": client.attempts}
        finally:
            with contextlib.suppress(Exception):
                conn.close()
    return {"outcome": "acked", "attempts": client.attempts}


async def _write_async(run: str, key: str, number: int, sleep: float) -> dict[str, Any]:
    client = Client(number)
    with client_context(client):
        try:
            conn = await _engine("async").connect()
        except Exception as exc:
            return {"outcome": "connect", "error": describe(exc), "attempts": client.attempts}
        try:
            await conn.execute(INSERT, {"run": run, "key": key, "client": number})
            if sleep:
                await conn.execute(SLEEP, {"seconds": sleep})
        except Exception as exc:
            return {"outcome": "tx", "error": describe(exc), "attempts": client.attempts}
        else:
            try:
                await conn.commit()
            except Exception as exc:
                return {"outcome": "commit", "error": describe(exc), "attempts": client.attempts}
        finally:
            with contextlib.suppress(Exception):  # broken: SQLAlchemy already invalidated it
                await conn.close()
    return {"outcome": "acked", "attempts": client.attempts}


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        for engine in _engines.values():
            result = engine.dispose()
            if asyncio.iscoroutine(result):
                await result
        await send({"type": "lifespan.shutdown.complete"})
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    path = scope["path"]
    if path not in ("/write/sync", "/write/async"):
        await _answer(send, 404, {"error": "no such path"})
        return
    args = (query["run"], query["key"], int(query["client"]), float(query.get("sleep", 0)))
    if path == "/write/async":
        body = await _write_async(*args)
    else:
        body = await asyncio.to_thread(_write_sync, *args)
    await _answer(send, 200, body)


async def _answer(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
