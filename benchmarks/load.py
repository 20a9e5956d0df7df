"""A small HTTP/1.1 load generator (keep-alive, asyncio): sequential timings and throughput."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Throughput", "sequential", "throughput"]


class _Client:
    """One keep-alive connection; reconnects when the server has closed an idle one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
        for attempt in (0, 1):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self._reader is not None
            try:
                self._writer.write(request)
                await self._writer.drain()
                head = await self._reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                if attempt or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
                continue  # a kept-alive connection the server had closed: once more, fresh
            lines = head.decode("latin-1").lower().split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            if headers.get("transfer-encoding") == "chunked":
                body = await self._chunks()
            else:
                body = await self._reader.readexactly(int(headers.get("content-length", "0")))
            if headers.get("connection") == "close":
                self.close()
            return int(lines[0].split(" ", 2)[1]), body
        raise AssertionError("unreachable")

    async def _chunks(self) -> bytes:
        assert self._reader is not None
        body = b""
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await self._reader.readexactly(size + 2))[:-2]
            if size == 0:
                return body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _failure(status: int, body: bytes) -> str:
    """What the app answered instead of a success (the SQLAlchemy app names the exception)."""
    text = body.decode("utf-8", "replace").strip()
    return f"{status} {text}" if len(text) < 60 else str(status)


async def sequential(port: int, path: str, n: int) -> tuple[list[float], Counter[str]]:
    """``n`` requests one after another: latencies in seconds, and the failures by kind."""
    client = _Client(port)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    try:
        for _ in range(n):
            started = time.perf_counter()
            status, body = await client.get(path)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors[_failure(status, body)] += 1
    finally:
        client.close()
    return latencies, errors


@dataclass
class Throughput:
    clients: int
    seconds: float
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


async def throughput(port: int, path: str, clients: int, seconds: float) -> Throughput:
    """``clients`` concurrent keep-alive clients sending requests back to back for ``seconds``."""
    started = time.perf_counter()
    deadline = started + seconds
    result = Throughput(clients, seconds)

    async def worker() -> None:
        client = _Client(port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status, body = await client.get(path)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                result.latencies.append(time.perf_counter() - t0)
                if status == 200:
                    result.completed += 1
                else:
                    result.errors[_failure(status, body)] += 1
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    result.seconds = time.perf_counter() - started
    return result
