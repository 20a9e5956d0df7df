"""A half-open connection: the network between a worker and the pooler goes silent.

No check on the socket sees this fault. Nothing arrives: no end-of-file, no ``FATAL``, no
reset. It is what a worker meets when a NAT gateway or a load balancer forgets its flows,
or a host vanishes without a goodbye. pgx went back from a socket check to a ping because of it.
Here the kernel does the work, with the TCP keepalives and ``tcp_user_timeout`` that
:func:`neon_connect.psycopg_params` sets by default (``keepalives_idle=30``, ``interval=10``,
``count=3``, ``tcp_user_timeout=60000``):

- **idle**: the keepalive probes go unanswered, the kernel ends the connection, the socket
  turns readable with the error, and the liveness check replaces it before the next use;
- **in flight**: a statement sent into the silence fails after ``tcp_user_timeout``, not
  after the kernel's ~15 minutes of retransmissions.

A userspace proxy cannot make this fault: its kernel still acknowledges every segment. So the
worker runs in a network namespace of its own (:func:`island`), joined to the host by a veth
pair. A ``blackhole`` queue on both ends silences the link, and a relay on the host's end
(:class:`Relay`) stands for the gateway: :meth:`Relay.forget` drops its flows while the link
is silent, so the reset never reaches the worker.

This needs root and ``ip`` (iproute2), as the project's CI runs have. The tests scale the
four values down through the URL (the user's own values win) so a run takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from neon_local.standin import StandInState

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = "resilience.worker_site.settings"
SCALED = {
    "keepalives_idle": "1",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "tcp_user_timeout": "3000",
}
"""The library's defaults (30 s, 10 s, 3, 60 s) scaled down: dead after ~3 s of silence."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass(frozen=True)
class Island:
    """A network namespace with one veth link to the host."""

    name: str
    host_if: str
    island_if: str
    host_ip: str

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def silence(self) -> None:
        """Drop every packet on the link, both ways, without a word to either end."""
        subprocess.run(["tc", "qdisc", "add", "dev", self.host_if, "root", "blackhole"], check=True)
        subprocess.run(
            self.command("tc", "qdisc", "add", "dev", self.island_if, "root", "blackhole"),
            check=True,
        )

    def speak(self) -> None:
        """The link carries packets again."""
        subprocess.run(["tc", "qdisc", "del", "dev", self.host_if, "root"], check=True)
        subprocess.run(
            self.command("tc", "qdisc", "del", "dev", self.island_if, "root"), check=True
        )


@contextlib.contextmanager
def island() -> Iterator[Island]:
    """A fresh namespace and veth pair, removed afterwards (the veth goes with the namespace)."""
    tag = f"nc{os.getpid() % 100000}"
    octet = os.getpid() % 250 + 1
    isle = Island(f"{tag}ns", f"{tag}h", f"{tag}i", f"10.231.{octet}.1")
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", isle.name)  # a run killed before its cleanup
    _ip("netns", "add", isle.name)
    try:
        _ip("link", "add", isle.host_if, "type", "veth", "peer", "name", isle.island_if)
        _ip("link", "set", isle.island_if, "netns", isle.name)
        _ip("addr", "add", f"{isle.host_ip}/24", "dev", isle.host_if)
        _ip("link", "set", isle.host_if, "up")
        inside = ("netns", "exec", isle.name, "ip")
        _ip(*inside, "addr", "add", f"10.231.{octet}.2/24", "dev", isle.island_if)
        _ip(*inside, "link", "set", isle.island_if, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield isle
    finally:
        _ip("netns", "del", isle.name)


@dataclass
class Relay:
    """A TCP relay from ``listen_ip`` to a local port: the gateway between worker and pooler."""

    listen_ip: str
    target_port: int
    port: int = 0
    _server: socket.socket = field(init=False, repr=False)
    _flows: list[tuple[socket.socket, socket.socket]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __enter__(self) -> Relay:
        self._server = socket.create_server((self.listen_ip, 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self.forget()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._flows.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def forget(self) -> None:
        """Drop every flow with a reset, as a gateway that lost its state."""
        with self._lock:
            flows, self._flows = self._flows, []
        for pair in flows:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _through(url: str, host: str, port: int, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.netloc.rpartition('@')[0]}@{host}:{port}"
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class Worker:
    """A Django worker in the island, one ``SELECT 1`` per line it reads; the outcome per tick."""

    def __init__(self, process: subprocess.Popen[str], relay: Relay) -> None:
        self.process = process
        self.relay = relay  # the gateway to the pooler
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):  # closed when the worker ends
            for line in self.process.stdout:
                self._lines.put(line)

    def tick(self, timeout: float) -> dict[str, object] | None:
        """The next tick's outcome, or None if it has not come back within ``timeout``."""
        assert self.process.stdin is not None
        self.process.stdin.write("tick\n")
        self.process.stdin.flush()
        try:
            outcome: dict[str, object] = json.loads(self._lines.get(timeout=timeout))
        except queue.Empty:
            return None
        return outcome


@contextlib.contextmanager
def worker(
    state: StandInState,
    isle: Island,
    *,
    by_hand: bool = False,
    params: dict[str, str] = SCALED,
) -> Iterator[Worker]:
    """The worker site's ``tick_on_line`` command in ``isle``, through relays to the stand-in,
    on ``neon_django.config()`` with ``params`` added to both URLs.

    ``by_hand`` is the control: Django's own backend on the relayed URL, with libpq's and the
    kernel's defaults (no ``tcp_user_timeout``, keepalives after two hours).
    """
    extra = {} if by_hand else params
    relays = Relay(isle.host_ip, state.pooler_port), Relay(isle.host_ip, state.pg_port)
    with relays[0] as pooled, relays[1] as direct:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "DATABASE_URL", "NEON_"))
        }
        env |= {
            "DATABASE_URL": _through(state.pooled_url, isle.host_ip, pooled.port, extra),
            "DATABASE_URL_UNPOOLED": _through(state.direct_url, isle.host_ip, direct.port, extra),
            "DJANGO_SETTINGS_MODULE": SETTINGS,
        }
        if by_hand:
            env["NEON_WORKER_SETUP"] = "by-hand"
        with subprocess.Popen(
            isle.command(sys.executable, "-m", "django", "tick_on_line"),
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as process:
            try:
                yield Worker(process, pooled)
            finally:
                process.kill()
