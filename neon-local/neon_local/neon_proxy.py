"""A proxy in front of the stand-in's endpoints that does what Neon's proxy does.

Neon ends TLS and the SCRAM exchange at its proxy, in front of PgBouncer and the compute. So
on both endpoints it accepts:

- **direct TLS**: libpq >= 17 (``sslnegotiation=direct``) and asyncpg (``direct_tls``) open TLS
  from the first byte, with ALPN ``postgresql``, skipping the ``SSLRequest`` round trip;
- **channel binding**: ``SCRAM-SHA-256-PLUS``, which Neon's console URLs ask for
  (``channel_binding=require``).

The stand-in's PgBouncer 1.24 has neither (direct TLS needs 1.25; it offers no channel
binding to its clients), and its PostgreSQL 15 has no direct TLS. :class:`NeonProxy` ends the
client's TLS either way and, for the users it holds a password for, the client's SCRAM exchange
too (offering ``-PLUS``, bound to its certificate), then logs in to the server behind it with
that password, over TLS of its own, and relays the session. Other users' authentication is the
server's own, passed through. Each accepted connection's negotiation is kept in
:attr:`NeonProxy.negotiations`, so a test can show which way a client came.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Mapping
from logging import Logger
from pathlib import Path
from types import TracebackType

from . import scram
from .processes import HOST

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello
_AUTH_OK, _AUTH_SASL, _AUTH_SASL_CONTINUE, _AUTH_SASL_FINAL = 0, 10, 11, 12
INSECURE = "connection is insecure (try using `sslmode=require`)"
"""Neon's proxy's answer to a client that asks for no TLS."""
COMPUTE_UNREACHABLE = "Couldn't connect to compute node"
HANDSHAKE_TIMEOUT = 60.0
"""Seconds a client may stay silent before its login ends (each read waits that long at
most), as PgBouncer's ``client_login_timeout``: one that sends nothing is closed, not left
holding a thread. The relay after the login waits without a limit, as a session may idle."""
"""Neon's proxy's words when the server behind it cannot be reached (a compute waking or
restarting); the same here when PgBouncer or PostgreSQL is down."""


class NeonProxy:
    """Listens on :data:`~neon_local.processes.HOST` (``port``, or a free one); relays to
    ``upstream_port`` there.

    ``passwords`` (user: password) are the users whose SCRAM exchange ends here, with channel
    binding offered; without it, every user's authentication passes through to the server.
    ``log`` gets a line per negotiation and per login ended here (``proxy_daemon.py``'s log);
    with it, :attr:`negotiations` and :attr:`mechanisms` are not kept (a daemon's would only
    grow).
    """

    def __init__(
        self,
        *,
        upstream_port: int,
        runtime_dir: str | Path,
        passwords: Mapping[str, str] | None = None,
        port: int = 0,
        log: Logger | None = None,
        handshake_timeout: float | None = HANDSHAKE_TIMEOUT,
    ) -> None:
        runtime = Path(runtime_dir)
        self._handshake_timeout = handshake_timeout
        self.upstream_port = upstream_port
        self._passwords = dict(passwords or {})
        self._binding_data = scram.server_end_point((runtime / "server.crt").read_text())
        self._verifiers = {user: scram.Verifier.of(pw) for user, pw in self._passwords.items()}
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
        self.mechanisms: list[str] = []
        """The SCRAM mechanism each client chose here (``SCRAM-SHA-256-PLUS`` when it bound
        the exchange to the TLS channel); passed-through logins are not listed."""
        self._log = log
        self._listener = socket.create_server((HOST, port))
        self.port: int = self._listener.getsockname()[1]

    def __enter__(self) -> NeonProxy:
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

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log.info(line)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                if self._listener.fileno() == -1:
                    return  # closed by __exit__
                time.sleep(0.05)  # out of descriptors, a client gone before accept: go on
                continue
            with contextlib.suppress(OSError):
                _no_delay(client)
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        # a client that gives up mid-handshake ends only its own thread
        with contextlib.ExitStack() as stack, contextlib.suppress(OSError):
            stack.enter_context(client)
            client.settimeout(self._handshake_timeout)  # TimeoutError is an OSError: closed
            tls_client = self._end_client_tls(client)
            if tls_client is None:
                return
            stack.enter_context(tls_client)
            startup = _read_startup(tls_client)
            user = _startup_user(startup)
            if user in self._verifiers:  # the login ends here, so does the version's choice
                startup, answer = negotiate_protocol(startup)
                if answer is not None:
                    _send(tls_client, b"v", answer)
            # as Neon's proxy does: the client's password first, then the server behind
            if user in self._verifiers and not self._authenticate(tls_client, user):
                return
            upstream = self._open_upstream()
            if upstream is None:
                _send_error(tls_client, "08006", COMPUTE_UNREACHABLE)
                return
            stack.enter_context(upstream)
            upstream.sendall(startup)
            if user in self._verifiers and not self._log_in(upstream, tls_client, user):
                return
            if _relay(tls_client, upstream) is upstream:
                _close_notify(tls_client)  # the server ended it: after a cancel, a termination

    def _authenticate(self, client: ssl.SSLSocket, user: str) -> bool:
        """The client's SCRAM exchange, ended here as Neon's proxy ends it: ``-PLUS`` offered,
        bound to this proxy's certificate (``tls-server-end-point``). False after an error
        response for a wrong password."""
        offered = f"{scram.SCRAM_PLUS}\0{scram.SCRAM}\0\0".encode()
        _send(client, b"R", struct.pack("!i", _AUTH_SASL) + offered)
        name, _, rest = _expect(client, b"p").partition(b"\0")
        mechanism = name.decode()
        if mechanism not in (scram.SCRAM, scram.SCRAM_PLUS):
            _send_error(client, "08P01", f"unsupported SASL mechanism {mechanism!r}")
            return False
        (length,) = struct.unpack("!i", rest[:4])
        exchange = scram.ServerExchange(
            self._verifiers[user], mechanism=mechanism, binding_data=self._binding_data
        )
        try:
            server_first = exchange.first(rest[4 : 4 + length].decode())
            _send(client, b"R", struct.pack("!i", _AUTH_SASL_CONTINUE) + server_first.encode())
            server_final = exchange.final(_expect(client, b"p").decode())
        except scram.ScramError:
            _send_error(client, "28P01", f'password authentication failed for user "{user}"')
            return False
        _send(client, b"R", struct.pack("!i", _AUTH_SASL_FINAL) + server_final.encode())
        if self._log is None:
            self.mechanisms.append(mechanism)
        self._say(f"{self.port}: {user} logged in with {mechanism}")
        return True

    def _log_in(self, upstream: ssl.SSLSocket, client: ssl.SSLSocket, user: str) -> bool:
        """Log in to the server behind with ``user``'s password, then tell the client it is
        in (the server's ``AuthenticationOk``). The server's error, if any, goes to the
        client as the server sent it."""
        exchange = scram.ClientExchange(self._passwords[user])
        while True:
            kind, body = _read_message(upstream)
            if kind != b"R":
                _send(client, kind, body)  # an error response: the client reads it and ends
                return False
            (code,) = struct.unpack("!i", body[:4])
            if code == _AUTH_OK:
                _send(client, kind, body)
                return True
            if code == _AUTH_SASL:
                first = exchange.first().encode()
                _send(
                    upstream,
                    b"p",
                    f"{scram.SCRAM}\0".encode() + struct.pack("!i", len(first)) + first,
                )
            elif code == _AUTH_SASL_CONTINUE:
                _send(upstream, b"p", exchange.final(body[4:].decode()).encode())
            elif code == _AUTH_SASL_FINAL:
                exchange.check(body[4:].decode())
            else:
                _send_error(client, "28000", f"neon-local proxy: the server asked for login {code}")
                return False

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
                if length == 16 and code == _CANCEL_REQUEST:
                    # libpq before 17's new cancel API, psycopg's cancel(), psycopg2 and asyncpg
                    # send it without TLS; Neon's proxy takes it so, and so does PgBouncer
                    self._forward_cancel(header + _read_exactly(client, 8))
                    return None
                if length != 8 or code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                    # a plain startup: Neon's endpoints accept TLS only, and say so
                    _send_error(client, "08P01", INSECURE)
                    return None
                if code == _SSL_REQUEST:
                    client.sendall(b"S")
                    break
                client.sendall(b"N")  # no GSS encryption; libpq then asks for TLS
            kind = "sslrequest"
        tls = self._server_tls.wrap_socket(client, server_side=True)
        if tls.selected_alpn_protocol() == "postgresql":
            kind += "+alpn"
        if self._log is None:
            self.negotiations.append(kind)
        self._say(f"{self.port}: TLS by {kind}")
        return tls

    def _forward_cancel(self, packet: bytes) -> None:
        """A cancel request, passed on as it came; the server closes when it has read it."""
        upstream = self._open_upstream()
        if upstream is None:
            return
        with upstream:
            upstream.sendall(packet)
            upstream.settimeout(10)
            while upstream.recv(1024):
                pass

    def _open_upstream(self) -> ssl.SSLSocket | None:
        """TLS to the server behind; None when it cannot be reached (stopped, restarting)."""
        try:
            raw = socket.create_connection((HOST, self.upstream_port), timeout=10)
        except OSError:
            return None
        try:
            raw.settimeout(None)
            _no_delay(raw)
            raw.sendall(struct.pack("!ii", 8, _SSL_REQUEST))
            if _read_exactly(raw, 1) != b"S":
                raise ConnectionError("the stand-in's server refused TLS")
            return self._upstream_tls.wrap_socket(raw)
        except OSError:
            raw.close()
            return None


def _close_notify(sock: ssl.SSLSocket) -> None:
    """TLS's goodbye before the close, as PostgreSQL and PgBouncer send it: an OpenSSL 3 client
    reads a bare close as an error ("SSL error: unexpected eof"), which fails libpq's cancel
    over TLS once the server has closed it as it should."""
    with contextlib.suppress(OSError, ValueError):
        sock.settimeout(1.0)
        sock.unwrap()


def _no_delay(sock: socket.socket) -> None:
    """Send each message at once, as PostgreSQL and PgBouncer do: with Nagle's algorithm on,
    a small message that follows another waits for the peer's delayed ACK (40 ms here)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _relay(a: ssl.SSLSocket, b: ssl.SSLSocket) -> ssl.SSLSocket:
    """Both directions in one thread, until either side closes; returns that side. An OpenSSL
    connection must not be read in one thread while another writes to it. ``selectors``
    (epoll), not ``select()``, which refuses descriptors from 1024 up.

    Nothing here waits on one side alone: bytes for a side that is not reading wait in its
    backlog while the other direction goes on (a pipeline's results coming back while its
    statements still go out), and a side is read again once its peer's backlog is below
    :data:`_BACKLOG`, so memory stays bounded and neither direction can block the other."""
    outgoing = {a: _Outgoing(a), b: _Outgoing(b)}
    peer = {a: b, b: a}
    with selectors.DefaultSelector() as selector:
        for sock in (a, b):
            sock.setblocking(False)
        while True:
            # bytes OpenSSL already decrypted are invisible to the selector
            readable = [s for s in (a, b) if s.pending() and outgoing[peer[s]].room()]
            if not readable:
                for sock in (a, b):
                    wanted = selectors.EVENT_READ if outgoing[peer[sock]].room() else 0
                    if outgoing[sock].backlog:
                        wanted |= selectors.EVENT_WRITE
                    _watch(selector, sock, wanted)
                for key, events in selector.select():
                    sock = key.fileobj  # type: ignore[assignment]
                    if events & selectors.EVENT_WRITE:
                        outgoing[sock].flush()
                    if events & selectors.EVENT_READ:
                        readable.append(sock)
            for src in readable:
                try:
                    data = src.recv(_CHUNK)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    continue  # a partial record, or TLS's own traffic (a session ticket)
                if not data:
                    outgoing[peer[src]].drain()  # the last words (an error) before the close
                    return src
                outgoing[peer[src]].add(data)


def _watch(selector: selectors.BaseSelector, sock: ssl.SSLSocket, events: int) -> None:
    """Watch ``sock`` for ``events``, or not at all for none (a selector takes no empty set)."""
    watched = selector.get_map().get(sock)
    if not events:
        if watched is not None:
            selector.unregister(sock)
    elif watched is None:
        selector.register(sock, events)
    elif watched.events != events:
        selector.modify(sock, events)


_CHUNK = 65536
_BACKLOG = 4 * _CHUNK
"""Bytes held for a side that is not reading before the other side is no longer read."""


class _Outgoing:
    """Bytes waiting to be written to one socket, written as it can take them. A TLS write
    that could not finish is tried again with the same bytes, as OpenSSL requires."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.backlog = bytearray()
        self._trying = b""  # a write that OpenSSL started and must finish as it began

    def room(self) -> bool:
        return len(self.backlog) < _BACKLOG

    def add(self, data: bytes) -> None:
        self.backlog += data
        self.flush()

    def flush(self) -> None:
        while self.backlog:
            self._trying = self._trying or bytes(self.backlog[:_CHUNK])
            try:
                sent = self.sock.send(self._trying)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                return  # not now: the selector says when
            del self.backlog[:sent]
            self._trying = self._trying[sent:]

    def drain(self, timeout: float = 5.0) -> None:
        """Everything held, before a close; given up after ``timeout`` on a side not reading."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as writable:
            writable.register(self.sock, selectors.EVENT_WRITE)
            while self.backlog and time.monotonic() < deadline:
                self.flush()
                if self.backlog:
                    writable.select(deadline - time.monotonic())


def _read_startup(sock: ssl.SSLSocket) -> bytes:
    """The startup (or cancel) packet, whole: its length, then the rest."""
    header = _read_exactly(sock, 4)
    (length,) = struct.unpack("!i", header)
    return header + _read_exactly(sock, length - 4)


_PROTOCOL_3_0 = 3 << 16


def negotiate_protocol(startup: bytes) -> tuple[bytes, bytes | None]:
    """A startup asking for protocol 3.x above 3.0 (libpq 18's ``max_protocol_version``) or
    for ``_pq_.`` options: the startup to send the server, at 3.0 without those, and the
    ``NegotiateProtocolVersion`` body to answer the client first (3.0, and the options not
    taken), as PostgreSQL 15 and PgBouncer answer; ``None`` for a plain 3.0 startup. The proxy ends the login itself, so
    the server's own answer would come after the client was told it was in."""
    (version,) = struct.unpack("!i", startup[4:8])
    fields = startup[8:].split(b"\0")
    pairs = list(zip(fields[0:-2:2], fields[1:-2:2], strict=True))
    unknown = [name for name, _ in pairs if name.startswith(b"_pq_.")]
    if version >> 16 != 3 or (version == _PROTOCOL_3_0 and not unknown):
        return startup, None
    body = b"".join(name + b"\0" + value + b"\0" for name, value in pairs if name not in unknown)
    body = struct.pack("!i", _PROTOCOL_3_0) + body + b"\0"
    answer = struct.pack("!ii", _PROTOCOL_3_0, len(unknown)) + b"".join(n + b"\0" for n in unknown)
    return struct.pack("!i", len(body) + 4) + body, answer


def _startup_user(startup: bytes) -> str | None:
    """The ``user`` of a startup packet; None for a cancel request."""
    (code,) = struct.unpack("!i", startup[4:8])
    if code == _CANCEL_REQUEST:
        return None
    fields = startup[8:].split(b"\0")
    pairs = dict(zip(fields[0::2], fields[1::2], strict=False))
    user = pairs.get(b"user")
    return None if user is None else user.decode()


def _read_message(sock: ssl.SSLSocket) -> tuple[bytes, bytes]:
    kind = _read_exactly(sock, 1)
    (length,) = struct.unpack("!i", _read_exactly(sock, 4))
    return kind, _read_exactly(sock, length - 4)


def _expect(sock: ssl.SSLSocket, kind: bytes) -> bytes:
    got, body = _read_message(sock)
    if got != kind:
        raise ConnectionError(f"expected a {kind!r} message, got {got!r}")
    return body


def _send(sock: socket.socket, kind: bytes, body: bytes) -> None:
    sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)


def _send_error(sock: socket.socket, code: str, message: str) -> None:
    fields = b"".join(
        key + value.encode() + b"\0"
        for key, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    _send(sock, b"E", fields + b"\0")


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data
