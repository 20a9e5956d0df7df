"""``ReplicaRouter``: reads to a read replica, writes to the primary, read-your-writes kept.

The stickiness rule: reads go to the primary (``default``) instead of a replica

* inside ``atomic()`` on the primary (a transaction sees its own writes), and
* for the rest of a request once that request asked for a write (``db_for_write``): a
  replica lags, so reading back there could return the row as it was before the write.

A request is scoped by :class:`ReplicaStickinessMiddleware` (sync and async views); outside a
request, :func:`sticky_scope` does the same for a task or a command, and without a scope a
write keeps the current thread or asyncio task on the primary from then on. The state is a
context variable holding a mutable flag, so an async view's ORM calls (run in a worker
thread by ``sync_to_async``, with a copy of the context) mark the request's own flag.

A replica that cannot be reached is skipped: its connect is retried within its own short
budget (``neon_django.databases(replica_retry=RetryPolicy(...))``), a warning names it, and reads
go to the next replica or the primary; it is tried again after :attr:`ReplicaRouter.retry_after`
seconds. Migrations never run on a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.signals import setting_changed
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils.decorators import sync_and_async_middleware

from ._replicas import replica_of
from .backend.base import is_direct

__all__ = ["ReplicaRouter", "ReplicaStickinessMiddleware", "sticky_scope", "wrote"]

logger = logging.getLogger("neon_django.replicas")

_databases_generation = 0
"""Bumped whenever ``settings.DATABASES`` is replaced, so every router rescans it once."""


def _databases_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(DATABASES=...)`` (the signal fires on enter and exit).

    One module-level receiver serves every router: nothing the signal holds keeps one alive.
    """
    global _databases_generation
    if setting == "DATABASES":
        _databases_generation += 1


setting_changed.connect(_databases_changed, dispatch_uid="neon_django.routers.databases")


def _scan_replicas(primary: str) -> tuple[str, ...]:
    """The aliases in ``settings.DATABASES`` that are replicas of ``primary``."""
    return tuple(a for a, db in settings.DATABASES.items() if replica_of(db) == primary)


class _Scope:
    """One request's (or task's) memory of having written."""

    __slots__ = ("wrote",)

    def __init__(self) -> None:
        self.wrote = False


_SCOPE: ContextVar[_Scope | None] = ContextVar("neon_django_replica_scope", default=None)


@contextlib.contextmanager
def sticky_scope() -> Iterator[None]:
    """A unit of work (a request, a task) that starts reading from replicas again."""
    token = _SCOPE.set(_Scope())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def wrote() -> bool:
    """Whether the current request (or scope) has written, so its reads stay on the primary."""
    scope = _SCOPE.get()
    return scope is not None and scope.wrote


def _mark_written() -> None:
    scope = _SCOPE.get()
    if scope is None:  # no request scope: stay on the primary for the rest of this context
        scope = _Scope()
        _SCOPE.set(scope)
    scope.wrote = True


@sync_and_async_middleware
def ReplicaStickinessMiddleware(  # noqa: N802 - a middleware is named like a class
    get_response: Callable[[Any], Any],
) -> Callable[[Any], Any]:
    """Each request starts on the replicas; after it writes, its reads stay on the primary."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: Any) -> Any:
            with sticky_scope():
                response: Awaitable[Any] = get_response(request)
                return await response

        return async_middleware

    def middleware(request: Any) -> Any:
        with sticky_scope():
            return get_response(request)

    return middleware


class ReplicaRouter:
    """Send reads to the replicas of ``primary`` (round robin), everything else to it."""

    primary: str = DEFAULT_DB_ALIAS
    retry_after: float = 30.0
    """Seconds a replica that failed to connect is left out before it is tried again."""

    def __init__(self) -> None:
        self._turn = itertools.count()
        self._down: dict[str, float] = {}
        self._lock = threading.Lock()
        self._replicas: tuple[int, str, tuple[str, ...]] | None = None
        """``(DATABASES generation, primary, replica aliases)``: scanned once, not per query."""

    def replicas(self) -> list[str]:
        """The aliases in ``settings.DATABASES`` that are replicas of :attr:`primary`.

        Computed once per ``DATABASES`` (``override_settings`` starts afresh); a new list
        each call, so a caller that changes it leaves the router's copy alone.
        """
        generation, primary = _databases_generation, self.primary  # read before the scan
        cached = self._replicas
        if cached is None or cached[0] != generation or cached[1] != primary:
            cached = (generation, primary, _scan_replicas(primary))
            self._replicas = cached  # one assignment: a racing thread at worst scans twice
        return list(cached[2])

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if wrote() or connections[self.primary].in_atomic_block or is_direct(self.primary):
            return self.primary  # its own writes, its transaction, or its direct() session
        replicas = self.replicas()
        if not replicas:
            return None  # nothing to route: Django's default
        start = next(self._turn)
        for i in range(len(replicas)):
            alias = replicas[(start + i) % len(replicas)]
            if self._usable(alias):
                return alias
        return self.primary

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        _mark_written()
        return self.primary

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        group = {self.primary, *self.replicas()}
        if obj1._state.db in group and obj2._state.db in group:
            return True
        return None

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool | None:
        return False if db in self.replicas() else None

    def _usable(self, alias: str) -> bool:
        """Connect now (within the alias's retry budget) so a replica that is down is skipped."""
        with self._lock:
            until = self._down.get(alias)
            if until is not None and time.monotonic() < until:
                return False
        connection = connections[alias]
        if connection.connection is not None or _in_event_loop():
            return True  # open already, or an async caller: the query itself will connect
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            db = settings.DATABASES[alias]
            logger.warning(
                "read replica %r (%s:%s) is unreachable (%s); reading from %r, retrying it in %.0f s",
                alias,
                db.get("HOST"),
                db.get("PORT"),
                first,
                self.primary,
                self.retry_after,
            )
            with self._lock:
                self._down[alias] = time.monotonic() + self.retry_after
            return False
        with self._lock:
            self._down.pop(alias, None)
        return True


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
