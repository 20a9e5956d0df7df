"""A TLS front for the stand-in that accepts direct TLS, as Neon's proxy does.

libpq >= 17 (``sslnegotiation=direct``) and asyncpg (``direct_tls``) can open TLS from the
first byte, skipping the ``SSLRequest`` round trip. Neon's proxy accepts that on both
endpoints; PgBouncer accepts it only from 1.25 and PostgreSQL from 17, neither of which the
stand-in has. This front ends the client's TLS either way (direct, or after an
``SSLRequest``), opens TLS of its own to the server behind it, and relays the session. Each
accepted connection's negotiation is kept in :attr:`DirectTLSFront.negotiations`, so a test
can show which way a client came.

Only the negotiation is Neon's: authentication is the server's own, passed through.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from pathlib import Path
from types import TracebackType

from .processes import HOST

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello


class DirectTLSFront:
    """Listens on :data:`~neon_local.processes.HOST`; relays to ``upstream_port`` there."""

    def __init__(self, *, upstream_port: int, runtime_dir: str | Path) -> None:
        runtime = Path(runtime_dir)
        self.upstream_port = upstream_port
        self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_tls.load_cert_chain(runtime / "server.crt", runtime / "server.key")
        self._server_tls.set_alpn_protocols(["postgresql"])
        self._server_tls.num_tickets = 0  # libpq resumes no session: tickets are noise
        self._upstream_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._upstream_tls.check_hostname = False
        self._upstream_tls.verify_mode = ssl.CERT_NONE  # the stand-in's own server, on HOST
        self.negotiations: list[str] = []
        """``direct`` or ``sslrequest`` per accepted connection, with ``+alpn`` when the
        client offered ALPN ``postgresql``."""
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]

    def __enter__(self) -> DirectTLSFront:
        self._spawn(self._accept)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept()
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        # a client that gives up mid-handshake ends only its own thread
        with contextlib.ExitStack() as stack, contextlib.suppress(OSError):
            stack.enter_context(client)
            tls_client = self._end_client_tls(client)
            if tls_client is None:
                return
            stack.enter_context(tls_client)
            upstream = stack.enter_context(self._open_upstream())
            _relay(tls_client, upstream)

    def _end_client_tls(self, client: socket.socket) -> ssl.SSLSocket | None:
        """The client's TLS, ended here; None for a client that asks for none."""
        first = client.recv(1, socket.MSG_PEEK)
        if not first:
            return None
        kind = "direct"
        if first[0] != _TLS_HANDSHAKE:
            while True:
                header = _read_exactly(client, 8)
                length, code = struct.unpack("!ii", header)
                if length != 8 or code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    return None  # a plain startup: Neon's endpoints accept TLS only
                if code == _SSL_REQUEST:
                    client.sendall(b"S")
                    break
                client.sendall(b"N")  # no GSS encryption; libpq then asks for TLS
            kind = "sslrequest"
        tls = self._server_tls.wrap_socket(client, server_side=True)
        if tls.selected_alpn_protocol() == "postgresql":
            kind += "+alpn"
        self.negotiations.append(kind)
        return tls

    def _open_upstream(self) -> ssl.SSLSocket:
        raw = socket.create_connection((HOST, self.upstream_port))
        raw.sendall(struct.pack("!ii", 8, _SSL_REQUEST))
        if _read_exactly(raw, 1) != b"S":
            raw.close()
            raise ConnectionError("the stand-in's server refused TLS")
        return self._upstream_tls.wrap_socket(raw)


def _relay(a: ssl.SSLSocket, b: ssl.SSLSocket) -> None:
    """Both directions in one thread, until either side closes: an OpenSSL connection must
    not be read in one thread while another writes to it."""
    for sock in (a, b):
        sock.setblocking(False)
    while True:
        # bytes OpenSSL already decrypted are invisible to select()
        ready = [sock for sock in (a, b) if sock.pending()] or select.select([a, b], [], [])[0]
        for src in ready:
            try:
                data = src.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue  # a partial record, or TLS's own traffic (a session ticket)
            if not data:
                return
            _send_all(b if src is a else a, data)


def _send_all(sock: ssl.SSLSocket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
            select.select([], [sock], [], 1)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data
