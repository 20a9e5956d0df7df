"""Retry the connect step while a suspended Neon compute wakes up or a server restarts.

Connecting is retried on errors that a waking compute, a busy pooler, or a pooler or server
going down or coming back mid-handshake produce, with exponential backoff and jitter, within
a bounded total time. Authentication errors, unknown databases or roles, and a server whose
``max_connections`` is used up are never retried.

Behind a transaction pooler the connect step has a second half: PgBouncer logs in to a
server only at a transaction's first statement. When that login has failed, PgBouncer answers
the statement with ``server login has been failing`` for ``server_login_retry`` (15 s), closes
the client, and forwards nothing (:func:`is_refused_before_forwarding`). Such a statement is
sent again on a new connection (:meth:`RetryPolicy.rerun_refused`). Any other statement that
reached a server is never re-sent (for ``COMMIT``, see :mod:`neon_connect._commit_outcome`).
The last error is re-raised unchanged (callers keep catching what they catch), with a note
naming the endpoint kind and host.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from ._endpoints import Endpoint
from ._liveness import IDLE

logger = logging.getLogger("neon_connect")
T = TypeVar("T")

_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P03", "08000", "08001", "08006"})
_FULL_SERVER_SQLSTATE = "53300"  # too_many_connections
_PERMANENT_SQLSTATES = frozenset({"28000", "28P01", "3D000", "42501", "08P01", "0A000"})
_PERMANENT_TEXT = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "ssl required",
    "does not support ssl",
    "channel binding",
    "endpoint id is not specified",
    "unsupported startup parameter",
    "permission denied",
    "invalid connection option",
    "invalid dsn",
)
_TRANSIENT_TEXT = (
    "connection refused",
    "connection reset",
    "timeout expired",
    "timed out",
    "server closed the connection unexpectedly",
    "could not receive data from server",
    "ssl syscall error",
    "eof detected",
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
    "couldn't connect to compute node",
    "failed to connect to the compute node",
    "could not connect to compute node",
    "no more connections allowed",
)
# A pooler or server going down or coming back while a client is mid-handshake: the TLS
# session or the socket is cut before the startup completes, or the pooler cannot reach the
# server yet. Nothing was sent but the startup packet, so another attempt is safe.
_RESTART_TEXT = (
    "unexpected eof",  # OpenSSL 3: "SSL error: unexpected eof while reading"
    "eof occurred in violation of protocol",  # Python's ssl (asyncpg)
    "broken pipe",
    "connection was closed in the middle of operation",  # asyncpg
    "the database system is shutting down",
    "the database system is in recovery mode",
    "pgbouncer cannot connect to server",
    "server login has been failing",  # PgBouncer's server_login_retry
    "query_wait_timeout",  # PgBouncer: no server connection came free in time
    "server conn crashed",
    "invalid server parameter",  # PgBouncer (08P01) when its server login is cut under it
    "ssl connection has been closed unexpectedly",  # libpq via psycopg2, the same cut
)
# The server's own connection limit: waiting does not help a traffic spike; a pooler does.
_FULL_SERVER_TEXT = ("too many clients already", "remaining connection slots are reserved")
# PgBouncer's fast fail (``check_fast_fail`` in objects.c, 1.18 to 1.24): a pool whose last
# server login failed and which has no server connection left answers a client that needs a
# server with this, then closes it. No server was linked, so nothing was forwarded.
_REFUSED_TEXT = "server login has been failing"
_PROTOCOL_VIOLATION = "08P01"  # the SQLSTATE PgBouncer gives its own errors
_TRANSIENT_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE}
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (raised while connecting) is worth another attempt."""
    text = str(exc).lower()
    if any(fragment in text for fragment in _PERMANENT_TEXT):
        return False
    if any(fragment in text for fragment in _TRANSIENT_TEXT + _RESTART_TEXT):
        return True
    if _is_full_server(exc):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in _PERMANENT_SQLSTATES:
        return False
    if sqlstate in _TRANSIENT_SQLSTATES:
        return True
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


@functools.lru_cache(maxsize=64)  # asked after every connect, of the same few hosts
def is_local_host(host: str) -> bool:
    """True for this machine: ``localhost``, 127.0.0.0/8, ``::1``, a Unix socket directory
    (or no host, libpq's default socket)."""
    host = host.strip().strip("[]").lower()
    if not host or host.startswith("/") or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ANSWERED: set[tuple[str, int]] = set()
"""Local addresses that accepted a connection in this process (see :func:`is_local_refusal`)."""


def is_local_refusal(exc: BaseException, endpoint: Endpoint) -> bool:
    """True when a server on this machine that never answered this process refused the
    connection: nothing listens on that port, which waiting rarely changes (a stopped
    stand-in, a wrong port). A remote endpoint's refusal can be a compute or pooler coming
    back, and so can a local one that answered before (a pooler restarting under a worker):
    both keep the full retry."""
    text = str(exc).lower()
    refused = (
        isinstance(exc, ConnectionRefusedError)
        or getattr(exc, "errno", None) == errno.ECONNREFUSED
        or "connection refused" in text
        or f"[errno {errno.ECONNREFUSED}]" in text  # asyncpg's "Multiple exceptions: ..."
    )
    return refused and is_local_host(endpoint.host) and _address(endpoint) not in _ANSWERED


def _address(endpoint: Endpoint) -> tuple[str, int]:
    return (endpoint.host, endpoint.port or 5432)


def is_refused_before_forwarding(exc: BaseException, connection: Any) -> bool:
    """True when a transaction pooler refused ``exc``'s statement without forwarding it.

    PgBouncer links a client to a server only at a transaction's first statement, so this
    refusal also says that no transaction was open: the statement never ran anywhere, and
    sending it again on a new connection is the same as sending it late. ``connection`` is
    the driver's connection the statement went to: PgBouncer closes it after refusing, while
    a server's error with the same words leaves it open. psycopg2 reports the refusal as the
    closed connection alone, which does not prove it: never true there.
    """
    cause = getattr(exc, "orig", None) or exc.__cause__ or exc  # SQLAlchemy's, Django's wrappers
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return (
        sqlstate in (None, _PROTOCOL_VIOLATION)
        and _REFUSED_TEXT in str(cause).lower()
        and connection_lost(connection)
    )


RESENDING = "_neon_resending"
"""Set on a driver connection while an adapter sends a statement again after an error:
``BEGIN`` then goes alone, as psycopg sends it (``_begin_with_first_statement``), so that an
error the pooler gives before it closes the connection reaches the client in its own words
(psycopg's pipeline reports only the closed connection)."""


@contextlib.contextmanager
def resending(connection: Any) -> Iterator[None]:
    """Around a statement sent again on ``connection`` (see :data:`RESENDING`)."""
    if connection is None:
        yield
        return
    setattr(connection, RESENDING, True)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError):
            delattr(connection, RESENDING)


MERGED_PIPELINE = "_neon_begin_pipeline"
"""The mark on an error from the pipeline that sends ``BEGIN`` with a transaction's first
statement (``_begin_with_first_statement``): that pipeline was not the app's, and is over."""


def in_pipeline(connection: Any, error: BaseException | None = None) -> bool:
    """True while a psycopg connection is in pipeline mode, unless ``error`` came from the
    pipeline that sends ``BEGIN`` with a first statement (``_begin_with_first_statement``):
    that one ended with the error, though a lost connection's libpq still reports it."""
    if error is not None and getattr(error, MERGED_PIPELINE, False):
        return False
    return bool(getattr(getattr(connection, "pgconn", None), "pipeline_status", 0))


def opens_transaction(connection: Any) -> bool:
    """True when the next statement on ``connection`` would open a transaction: the driver is
    not in autocommit and the server holds none yet. If the connection is lost during that
    statement, nothing of the transaction can have committed, so the statement may be sent
    again on a new connection (see the adapters' reruns). Asked before the statement is sent.
    psycopg 3 and psycopg2 tell the server's status; anything else answers False."""
    if getattr(connection, "autocommit", True):
        return False
    pgconn = getattr(connection, "pgconn", None)  # psycopg 3 (its .info is built per call)
    if pgconn is not None:
        return int(pgconn.transaction_status) == IDLE
    get_status = getattr(connection, "get_transaction_status", None)  # psycopg2
    return callable(get_status) and get_status() == IDLE


def connection_lost(connection: Any) -> bool:
    """True when a driver's connection is gone: psycopg's ``broken``, psycopg2's ``closed``
    (2 once found lost), asyncpg's ``is_closed()``."""
    if getattr(connection, "broken", False) or getattr(connection, "closed", False):
        return True
    is_closed = getattr(connection, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


_DEADLINE: ContextVar[float | None] = ContextVar("neon_connect_rerun_deadline", default=None)
"""While a refused statement is being sent again: when its budget ends (monotonic seconds)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry a connect.

    ``timeout`` bounds the total time spent across attempts (seconds); 0 turns retrying off.
    The default, 20 s, outlasts PgBouncer's ``server_login_retry`` (15 s, Neon's setting too):
    after a server restart the pooler refuses every transaction that long.
    ``local_refused_timeout`` bounds it when a host on this machine that never answered this
    process refuses the connection (:func:`is_local_refusal`): a stopped stand-in or a wrong
    port fails at once, with a hint; a local pooler restarting under a running app keeps the
    full retry.
    """

    timeout: float = 20.0
    initial_delay: float = 0.1
    max_delay: float = 2.0
    multiplier: float = 2.0
    local_refused_timeout: float = 1.5

    def __post_init__(self) -> None:
        for name in ("timeout", "initial_delay", "max_delay", "local_refused_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be >= 1")

    def delays(self) -> Iterator[float]:
        """Backoff delays with "equal jitter": half fixed, half random."""
        delay = self.initial_delay
        while True:
            yield delay / 2 + random.uniform(0, delay / 2)
            delay = min(delay * self.multiplier, self.max_delay)

    def budget(self) -> float:
        """Seconds this policy may retry now: its timeout, cut to what is left of the budget
        of a statement being sent again (:meth:`rerun_refused`), whose reconnects must not
        start budgets of their own."""
        deadline = _DEADLINE.get()
        if deadline is None:
            return self.timeout
        return max(0.0, min(self.timeout, deadline - time.monotonic()))

    def call(self, connect: Callable[[], T], *, endpoint: Endpoint) -> T:
        """Run ``connect()``, retrying transient failures."""
        budget = self.budget()
        start = time.monotonic()
        delays = self.delays()
        attempt = 1
        while True:
            try:
                connection = connect()
            except Exception as exc:
                delay = self._next_delay(exc, delays, start, attempt, endpoint, budget=budget)
            else:
                if is_local_host(endpoint.host):
                    _ANSWERED.add(_address(endpoint))
                return connection
            time.sleep(delay)
            attempt += 1

    def rerun_refused(
        self,
        rerun: Callable[[], T],
        *,
        refused: Exception,
        is_refusal: Callable[[Exception], bool],
        endpoint: Endpoint,
        sleep: Callable[[float], object] = time.sleep,
    ) -> T:
        """Send a statement again while the pooler keeps refusing it before forwarding.

        ``refused`` is the pooler's answer to the first try; ``rerun()`` connects anew and
        sends the same statement; ``is_refusal`` tells a refusal from any other error (see
        :func:`is_refused_before_forwarding`), which is raised at once. ``sleep`` lets an
        adapter wait its own way (SQLAlchemy's async engines wait on the event loop).
        """
        start = time.monotonic()
        delays = self.delays()
        attempt = 1
        exc = refused
        outer = _DEADLINE.get()
        deadline = start + self.timeout if outer is None else min(outer, start + self.timeout)
        token = _DEADLINE.set(deadline)  # the reconnects share this budget
        try:
            while True:
                sleep(self._next_delay(exc, delays, start, attempt, endpoint, refusal=is_refusal))
                attempt += 1
                try:
                    return rerun()
                except Exception as error:
                    if not is_refusal(error):
                        raise
                    exc = error
        finally:
            _DEADLINE.reset(token)

    async def acall(self, connect: Callable[[], Awaitable[T]], *, endpoint: Endpoint) -> T:
        """The async twin of :meth:`call`."""
        budget = self.budget()
        start = time.monotonic()
        delays = self.delays()
        attempt = 1
        while True:
            try:
                connection = await connect()
            except Exception as exc:
                delay = self._next_delay(exc, delays, start, attempt, endpoint, budget=budget)
            else:
                if is_local_host(endpoint.host):
                    _ANSWERED.add(_address(endpoint))
                return connection
            await asyncio.sleep(delay)
            attempt += 1

    def _next_delay(
        self,
        exc: Exception,
        delays: Iterator[float],
        start: float,
        attempt: int,
        endpoint: Endpoint,
        *,
        refusal: Callable[[Exception], bool] | None = None,
        budget: float | None = None,
    ) -> float:
        """The delay before the next attempt, or re-raise ``exc`` with a note."""
        elapsed = time.monotonic() - start
        delay = next(delays)
        worth_it = is_transient(exc) if refusal is None else refusal(exc)
        limit = self.timeout if budget is None else budget
        local_refusal = refusal is None and is_local_refusal(exc, endpoint)
        if local_refusal:
            limit = min(limit, self.local_refused_timeout)
        if not worth_it or elapsed + delay > limit:
            _scrub(exc, endpoint)
            where = f"the {endpoint.kind} endpoint {endpoint.display_host}"
            if refusal is not None:
                note = (
                    f"neon-connect: the pooler at {where} refused the statement without "
                    f"forwarding it ({attempt} tries in {elapsed:.1f}s); it does so for "
                    "server_login_retry after a failed server login: the server is down or "
                    "restarting"
                )
            elif attempt > 1:
                note = f"neon-connect: could not connect to {where} ({attempt} attempts in {elapsed:.1f}s)"
            else:
                note = f"neon-connect: could not connect to {where}"
            if local_refusal:
                hint = (
                    f"nothing listens at {endpoint.display_host} on this machine: if it is "
                    "the local stand-in, run `neon-local status` (or `neon-local up`); "
                    "otherwise check the port in the URL"
                )
                note += f"; {hint}"
                # logged too: Python 3.10 prints no exception notes
                logger.warning("neon-connect: %s", hint)
            if endpoint.is_neon and "authentication failed" in str(exc).lower():
                note += "; check that user, password and host come from one Neon connection string"
            if _is_full_server(exc) and not endpoint.transaction_pooler:
                note += (
                    "; the server's max_connections is used up: send app traffic to the pooled "
                    "endpoint (DATABASE_URL with -pooler), keep the direct one for migrations"
                )
            add_note(exc, note)
            raise exc
        logger.warning(
            "neon-connect: connecting to the %s endpoint %s failed (%s); retry %d in %.2fs"
            if refusal is None
            else "neon-connect: the pooler at the %s endpoint %s refused a statement without "
            "forwarding it (%s); sending it again on a new connection, try %d in %.2fs",
            endpoint.kind,
            endpoint.display_host,
            _summary(exc, endpoint),
            attempt,
            delay,
        )
        return delay


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(timeout=0)


def _is_full_server(exc: BaseException) -> bool:
    text = str(exc).lower()
    return getattr(exc, "sqlstate", None) == _FULL_SERVER_SQLSTATE or any(
        fragment in text for fragment in _FULL_SERVER_TEXT
    )


def _summary(exc: BaseException, endpoint: Endpoint) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[-1].strip()
    return endpoint.mask_secret(
        f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
    )


def _scrub(exc: BaseException, endpoint: Endpoint) -> None:
    """Drivers do not echo passwords, but make sure of it."""
    if any(secret in str(arg) for secret in endpoint.secrets() for arg in exc.args):
        exc.args = tuple(endpoint.mask_secret(str(arg)) for arg in exc.args)


def add_note(exc: BaseException, note: str) -> None:
    # BaseException.add_note is 3.11+; on 3.10 set the attribute it would set.
    notes = [*getattr(exc, "__notes__", []), note]
    setattr(exc, "__notes__", notes)  # noqa: B010
