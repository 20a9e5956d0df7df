"""Close kept connections when the platform stops the process with SIGTERM.

Neon advises it for elastic platforms (neon.com/docs/guides/serverless-connection-pooling):
Cloud Run, ECS/Fargate and Modal send SIGTERM, then SIGKILL seconds later, and may freeze
the instance or cut its network in between. A connection still open then stays a client of
the pooler until its timeouts end it; one closed at SIGTERM says goodbye while it can.

One handler per process, put in front of the handler it finds, so a server's own graceful
shutdown (gunicorn's, uvicorn's, Celery's) still runs:

1. it runs the adapters' closers, which close what sits idle now (a connection in use is
   never closed under its user);
2. it marks the process as stopping, so a connection in use is closed when it is released
   (Django: at the end of its request; SQLAlchemy: at checkin);
3. it hands the signal on: to the handler it replaced, or, where there was none, it ends the
   process as SIGTERM would have (same exit status).

A handler installed after this one replaces it (gunicorn's workers with ``--preload``): the
later one owns SIGTERM then, and nothing is chained or closed early.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, Literal

from ._liveness import IDLE
from ._platforms import detect_platform
from .errors import ConfigurationError

logger = logging.getLogger("neon_connect")

CloseOnSigterm = bool | Literal["auto"]
"""The adapters' ``close_on_sigterm`` option: ``"auto"`` (the default), True or False."""

Closer = Callable[[Any], None]
"""Called with its owner from the signal handler, in the main thread: closes what is idle."""

_closers: weakref.WeakKeyDictionary[Any, Closer] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_previous: Any = None
_installed = False
_stopping = False
_owner_pid = 0
"""The process that installed the handler (see :func:`_handle`)."""


def close_on_sigterm(value: CloseOnSigterm, *, env: Mapping[str, str], where: str) -> bool:
    """Resolve ``close_on_sigterm``: ``"auto"`` is on for elastic platforms (Cloud Run,
    ECS/Fargate, Modal), where Neon advises it, and off elsewhere; True or False stand.
    ``where`` names the call, for the error."""
    if value == "auto":
        platform = detect_platform(env)
        return platform is not None and platform.kind == "elastic"
    if isinstance(value, bool):
        return value
    raise ConfigurationError(
        f'{where}(close_on_sigterm={value!r}): use "auto" (the default: on for Cloud Run, '
        "ECS/Fargate and Modal), True or False."
    )


def stopping() -> bool:
    """Whether SIGTERM has arrived: connections in use close when they are released."""
    return _stopping


def on_sigterm(owner: object, closer: Closer, *, where: str) -> bool:
    """Run ``closer(owner)`` at SIGTERM for as long as ``owner`` lives, installing the
    handler on first use. False, with a warning, where no handler can be installed: outside
    the main thread (Python's rule), or where SIGTERM is ignored or was set outside Python."""
    global _previous, _installed, _owner_pid
    with _lock:
        _closers[owner] = closer
        if _installed:
            return True
        if threading.current_thread() is not threading.main_thread():
            logger.warning(
                "neon-connect: %s(close_on_sigterm=...) ran outside the main thread, where no "
                "signal handler can be set: kept connections close with the process instead. "
                "Create it at import time (settings, module level) to have them closed at "
                "SIGTERM.",
                where,
            )
            return False
        previous = signal.getsignal(signal.SIGTERM)
        if previous is None or previous == signal.SIG_IGN:
            logger.warning(
                "neon-connect: %s(close_on_sigterm=...): SIGTERM is %s, so no handler is put "
                "in front of it; kept connections close with the process.",
                where,
                "ignored" if previous == signal.SIG_IGN else "handled outside Python",
            )
            return False
        signal.signal(signal.SIGTERM, _handle)
        _previous, _installed, _owner_pid = previous, True, os.getpid()
        return True


def _handle(signum: int, frame: FrameType | None) -> None:
    global _stopping
    # a forked child (multiprocessing, a prefork worker) shares its parent's sockets: closing
    # them here would send the parent's goodbye. It only hands the signal on.
    first = False
    if os.getpid() == _owner_pid:
        first, _stopping = not _stopping, True
    if first:
        for owner, closer in list(_closers.items()):
            try:
                closer(owner)
            except Exception as error:  # noqa: BLE001  # the signal must still be handed on
                logger.warning(
                    "neon-connect: closing kept connections at SIGTERM failed: %s",
                    type(error).__name__,
                )
    previous = _previous
    if callable(previous):
        previous(signum, frame)
        return
    # SIG_DFL: end the process as SIGTERM would have, with the same exit status
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def run_briefly(work: Callable[[], None], *, seconds: float = 2.0) -> None:
    """Run ``work`` in a thread and wait at most ``seconds``: a signal handler interrupts
    the main thread anywhere, maybe holding the very lock ``work`` needs, and must not wait
    on itself."""
    thread = threading.Thread(target=work, name="neon-connect-sigterm", daemon=True)
    thread.start()
    thread.join(seconds)


def at_rest(connection: Any) -> bool:
    """True when a driver's connection runs no statement and holds no transaction. Not
    enough alone: between two calls of its user (``cursor()`` then ``execute()``, a psycopg2
    statement then its fetch) a connection is at rest too, so the adapters also require it
    released (Django: at a request's end). psycopg 3 holds its lock while a statement runs."""
    lock = getattr(connection, "lock", None)
    if lock is not None:
        if not lock.acquire(blocking=False):
            return False
        lock.release()
    pgconn = getattr(connection, "pgconn", None)  # psycopg 3
    if pgconn is not None:
        return int(pgconn.transaction_status) == IDLE
    get_status = getattr(connection, "get_transaction_status", None)  # psycopg2
    return callable(get_status) and get_status() == IDLE
