"""A TCP proxy that adds a fixed one-way delay per direction and counts protocol round trips.

This machine's kernel has no ``netem``, so network distance is simulated here: every chunk
read from one side is written to the other side ``delay`` seconds later, in order, without
limiting throughput (chunks in flight overlap). A round-trip time of R is a one-way delay of
R/2 per direction. asyncio's timers wake at millisecond granularity, so small delays are
rounded up; the report shows the RTT measured through the proxy next to the nominal one.

Round trips are counted without parsing the (TLS-encrypted) Postgres traffic: each time the
direction of a connection's traffic turns from client->server to server->client, one round
trip has been paid. Those counts do not depend on the machine's speed.

``ProxyProcess`` runs a set of proxies in a child process, so that the proxy's CPU does not
compete for the GIL with the load generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["Counts", "DelayProxy", "ProxyProcess"]

_UP, _DOWN = 1, 2
_CHUNK = 65536


@dataclass
class Counts:
    """What went through one proxy since it started (or since ``reset_peak``)."""

    connections: int = 0  # accepted so far
    open: int = 0  # open now
    peak_open: int = 0  # most open at once since the last reset
    round_trips: int = 0  # client->server flights answered by a server->client flight
    bytes_up: int = 0
    bytes_down: int = 0


class DelayProxy:
    """Listen on 127.0.0.1 and forward to ``target`` with ``one_way_delay`` seconds each way."""

    def __init__(self, target_host: str, target_port: int, *, one_way_delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.one_way_delay = one_way_delay  # may be changed while running
        self.counts = Counts()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("DelayProxy.start() first")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reset_peak(self) -> None:
        self.counts.peak_open = self.counts.open

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        counts = self.counts
        counts.connections += 1
        counts.open += 1
        counts.peak_open = max(counts.peak_open, counts.open)
        try:
            try:
                server_r, server_w = await asyncio.open_connection(*self.target)
            except OSError:
                client_w.close()
                return
            last = [0]  # direction of the last flight on this connection
            with contextlib.suppress(asyncio.CancelledError):  # close() ends it: not an error
                await asyncio.gather(
                    self._pipe(client_r, server_w, last, _UP),
                    self._pipe(server_r, client_w, last, _DOWN),
                    return_exceptions=True,
                )
        finally:
            counts.open -= 1
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        last: list[int],
        direction: int,
    ) -> None:
        """Read chunks, stamp them with their due time, and let a second task write them then."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(_CHUNK)
                if direction == _DOWN and last[0] == _UP and data:
                    self.counts.round_trips += 1
                if data:
                    last[0] = direction
                    if direction == _UP:
                        self.counts.bytes_up += len(data)
                    else:
                        self.counts.bytes_down += len(data)
                queue.put_nowait((loop.time() + self.one_way_delay, data))
                if not data:
                    break
        except (OSError, asyncio.IncompleteReadError):
            queue.put_nowait((loop.time(), b""))
        except asyncio.CancelledError:
            sender.cancel()
            raise
        with contextlib.suppress(Exception):
            await sender

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


class ProxyProcess:
    """Named ``DelayProxy``s in a child process, driven through a pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        self._lock = threading.Lock()

    def _ask(self, *message: Any, timeout: float = 60.0) -> Any:
        with self._lock:
            self._conn.send(message)
            if not self._conn.poll(timeout):
                raise RuntimeError(f"proxy process: no answer to {message[0]!r}")
            ok, value = self._conn.recv()
        if not ok:
            raise RuntimeError(f"proxy process: {value}")
        return value

    def add(self, name: str, host: str, port: int) -> int:
        """Start a proxy called ``name`` in front of ``host:port``; returns its port."""
        return int(self._ask("add", name, host, port))

    def set_rtt(self, rtt: float) -> None:
        """Round-trip time in seconds for every proxy (half of it each way)."""
        self._ask("delay", rtt / 2)

    def counts(self) -> dict[str, Counts]:
        return {name: Counts(**c) for name, c in self._ask("counts").items()}

    def reset_peaks(self) -> None:
        self._ask("reset")

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(Exception):
                self._ask("stop", timeout=10)
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _finish(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _serve(conn: Connection) -> None:
    asyncio.run(_main(conn))


async def _main(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    proxies: dict[str, DelayProxy] = {}
    delay = [0.0]
    stopped = loop.create_future()

    async def handle(message: tuple[Any, ...]) -> Any:
        match message:
            case ("add", str(name), str(host), int(port)):
                proxy = DelayProxy(host, port, one_way_delay=delay[0])
                proxies[name] = proxy
                return await proxy.start()
            case ("delay", float(seconds)):
                delay[0] = seconds
                for proxy in proxies.values():
                    proxy.one_way_delay = seconds
                return None
            case ("counts",):
                return {name: asdict(p.counts) for name, p in proxies.items()}
            case ("reset",):
                for proxy in proxies.values():
                    proxy.reset_peak()
                return None
            case ("stop",):
                await asyncio.gather(*(p.close() for p in proxies.values()))
                stopped.set_result(None)
                return None
        raise ValueError(f"unknown command {message!r}")

    def listen() -> None:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                loop.call_soon_threadsafe(_finish, stopped)
                return
            future = asyncio.run_coroutine_threadsafe(handle(message), loop)
            try:
                conn.send((True, future.result()))
            except Exception as exc:  # reported to the parent, which raises it
                conn.send((False, repr(exc)))
            if message[0] == "stop":
                return

    threading.Thread(target=listen, daemon=True).start()
    await stopped
