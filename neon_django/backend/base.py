"""A PostgreSQL backend that chooses the pooled or the direct endpoint each time it connects.

Everything else is Django's own PostgreSQL backend. Which aliases go direct is kept in a
context variable, not on the connection object: Django keeps one connection object per
thread, and an async view's ORM calls run on a worker thread's object (``sync_to_async``),
which sees the caller's context but not the caller's connection object. So a ``direct()``
block in one thread, or in one asyncio task, never moves another.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.postgresql import base
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.db.backends.utils import debug_transaction
from django.db.transaction import TransactionManagementError
from django.db.utils import OperationalError, ProgrammingError

from neon_connect import Endpoint, RetryPolicy
from neon_connect._liveness import Liveness, liveness, refuse_commit_if_lost
from neon_connect._probes import (
    answers_like_transaction_pooler,
    lone_pooler_message,
    pooler_probe_wanted,
)
from neon_connect._retry import connection_lost
from neon_connect._secret import call_without_driver_frames, mask_driver_secrets
from neon_connect._session_guard import GuardMode, check_statement, explain_pooler_error
from neon_connect._sigterm import stopping
from neon_django._config import NeonSettings

from . import _checks  # noqa: F401  # registers neon_django.E010
from ._creation import DatabaseCreation
from ._cursors import CursorDebugWrapper, CursorWrapper

# imported once here, not at each connect: the code that runs right after a connect's wait
# runs with cold caches, where each extra step costs many times its usual time
_merge_begin: Callable[[Any], None] | None = None
if is_psycopg3:  # psycopg2 keeps Django's own cursor
    from ._begin_with_first_statement import begin_with_first_statement as _merge_begin

__all__ = ["DatabaseWrapper"]

_DIRECT_ALIASES: ContextVar[frozenset[str]] = ContextVar(
    "neon_django_direct_aliases", default=frozenset()
)
"""The aliases routed to the direct endpoint in the current thread or async context."""

_NO_RETRY = RetryPolicy(timeout=0.0)
"""For an alias that config() did not build: Django's own behaviour, no retry."""

_ROUTE_KEYS = ("HOST", "PORT", "USER", "PASSWORD", "OPTIONS")
# Django's transaction bookkeeping, which connect() resets: kept across a reconnect that
# replaces a connection the pooler refused (no statement of the transaction had run).
_TRANSACTION_STATE = (
    "autocommit",
    "in_atomic_block",
    "savepoint_ids",
    "atomic_blocks",
    "needs_rollback",
    "run_on_commit",
    "run_commit_hooks_on_set_autocommit_on",
)


def is_direct(alias: str) -> bool:
    """Whether ``alias`` is inside ``direct()`` in the current thread or async context."""
    return alias in _DIRECT_ALIASES.get()


class _DirectSettings(dict[str, Any]):
    """``settings_dict`` while routed direct: the direct endpoint over the alias's settings.

    Writes (Django renames ``NAME`` for test databases, a parallel worker ``update()``s it)
    also reach the alias's own dict; a copy is a copy of the alias's own dict, so
    ``connection.copy()`` inside ``direct()`` makes a connection that routes as this one does.
    """

    def __init__(self, alias_settings: dict[str, Any], direct: dict[str, Any]) -> None:
        routed = {key: direct[key] for key in _ROUTE_KEYS}
        # a real session keeps its cursors: QuerySet.iterator() streams again
        super().__init__({**alias_settings, **routed, "DISABLE_SERVER_SIDE_CURSORS": False})
        self._alias_settings = alias_settings

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._alias_settings[key] = value

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._alias_settings.pop(key, None)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: str, *default: Any) -> Any:
        self._alias_settings.pop(key, None)
        return super().pop(key, *default)

    def copy(self) -> dict[str, Any]:
        return self._alias_settings.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(self._alias_settings, memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (self._alias_settings,))


class DatabaseWrapper(base.DatabaseWrapper):
    creation_class = DatabaseCreation

    neon_connected_direct: bool | None = None
    """Where the open connection goes: True direct, False pooled, None when closed."""

    neon_connecting = False
    """True inside ``connect()``, while Django's set-up and ``connection_created`` run."""

    # Django assigns settings_dict in __init__ and reads it everywhere; as a property it shows
    # the endpoint this alias is routed to, so connecting, dbshell and QuerySet.iterator()
    # (DISABLE_SERVER_SIDE_CURSORS) all follow direct() without being told. The value lives
    # in the instance __dict__ under Django's own name, as a plain attribute would: so
    # mock.patch.object() finds and restores it, and assignment and deletion work as on
    # Django's backend.
    # Django reads it a dozen times per request: the common path is two dict reads.
    @property
    def settings_dict(self) -> dict[str, Any]:
        try:  # _neon_own_settings, inlined: this runs for every statement
            settings: dict[str, Any] = self.__dict__["settings_dict"]
        except KeyError:
            raise AttributeError("settings_dict") from None
        neon = settings.get("NEON")
        if neon is None or neon["DIRECT"] is None:
            return settings
        alias = self.__dict__.get("alias")  # _neon_routed_direct(), inlined
        if alias != NO_DB_ALIAS and alias not in _DIRECT_ALIASES.get():
            return settings
        return _DirectSettings(settings, neon["DIRECT"])

    @settings_dict.setter
    def settings_dict(self, value: dict[str, Any]) -> None:
        self.__dict__["settings_dict"] = value

    @settings_dict.deleter
    def settings_dict(self) -> None:
        try:
            del self.__dict__["settings_dict"]
        except KeyError:
            raise AttributeError("settings_dict") from None

    @property
    def _neon_own_settings(self) -> dict[str, Any]:
        """The alias's own settings, as assigned (not routed)."""
        try:
            settings: dict[str, Any] = self.__dict__["settings_dict"]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute 'settings_dict'"
            ) from None
        return settings

    # -- routing --------------------------------------------------------------------------

    @property
    def neon(self) -> NeonSettings | None:
        """The ``NEON`` entry that ``neon_django.config()`` put in the settings (read live)."""
        neon: NeonSettings | None = self._neon_own_settings.get("NEON")  # neon_settings()
        return neon

    @property
    def neon_transaction_pooler(self) -> bool:
        """True when the alias's app endpoint is behind a transaction pooler."""
        neon = self.neon
        return neon is not None and neon["ENDPOINTS"].app.transaction_pooler

    @property
    def neon_wants_direct(self) -> bool:
        """True when this alias's next connection should go to the direct endpoint."""
        neon = self.neon
        if neon is None or neon["DIRECT"] is None:
            return False  # one endpoint serves both roles, or none is known
        return self._neon_routed_direct()

    def _neon_routed_direct(self) -> bool:
        """Inside ``direct()``, or the alias that creates and drops databases (it needs a
        session, and PgBouncer may not serve 'postgres')."""
        alias = self.__dict__.get("alias")  # settings_dict is read before Django sets alias
        return alias == NO_DB_ALIAS or alias in _DIRECT_ALIASES.get()

    def neon_in_transaction(self) -> bool:
        """True while the open connection holds a transaction (atomic() or autocommit off)."""
        return self.in_atomic_block or (self.connection is not None and not self.autocommit)

    def neon_follow_route(self) -> None:
        """Close the open connection if it goes to the other endpoint and holds no transaction.

        An open transaction keeps its connection, as Django would: the switch happens at the
        first query after the transaction ends.
        """
        connected = self.neon_connected_direct  # None while closed: nothing to follow
        if (
            connected is not None
            and self.connection is not None
            and connected != self.neon_wants_direct
            and not self.neon_in_transaction()
        ):
            self.close()

    @contextlib.contextmanager
    def neon_direct(self) -> Iterator[None]:
        """Route this alias to the direct endpoint in the current thread or async context.

        Leaves the routing exactly as it was on the way out, whatever happens in the block.
        Never refuses: an open transaction stays on its connection (see neon_follow_route).
        """
        token = _DIRECT_ALIASES.set(_DIRECT_ALIASES.get() | {self.alias})
        try:
            self.neon_follow_route()
            yield
        finally:
            _DIRECT_ALIASES.reset(token)
            self.neon_follow_route()

    def neon_refuse_in_transaction(self, verb: str) -> None:
        """Raise if a transaction is open: ``direct()`` must not move one between servers."""
        if self.neon_in_transaction():
            raise TransactionManagementError(
                f"Cannot {verb} neon_django.direct(using={self.alias!r}) inside a transaction: "
                "the transaction would run on one server and the block on another. Move the "
                "atomic() block inside (or outside) the direct() block."
            )

    # -- connecting -----------------------------------------------------------------------

    def ensure_connection(self) -> None:
        self.neon_released = False  # in use from here: never closed under its user
        self.neon_follow_route()  # a direct() block entered or left since the last query
        if self.connection is None and self.in_atomic_block and self.closed_in_transaction:
            # Django 5.0+ refuses this itself; 4.2 would reconnect in autocommit and let the
            # rest of the atomic() block commit statement by statement
            raise ProgrammingError("Cannot open a new connection in an atomic block.")
        super().ensure_connection()

    def close_if_health_check_failed(self) -> None:
        """Django's health check at each use of a kept connection, without a round trip.

        Django calls this before every cursor and before ``atomic()`` opens a transaction,
        but checks only once per request, and never outside the request cycle: a worker
        loop, a management command or a LISTEN worker kept using a connection a suspend or a
        pooler restart had closed, and failed on every query for good. Here every use
        outside a transaction asks the socket (:mod:`neon_connect._liveness`, no bytes sent)
        and enforces ``CONN_MAX_AGE`` (and the idle limit of elastic platforms). A dead connection to the pooler is replaced before
        anything is sent: it held no session state. A dead ``direct()`` connection may have
        held LISTEN registrations, advisory locks or temp tables, so a use since the last
        request boundary (a worker's loop) raises one error saying the session ended, and the
        next use connects afresh; at a request's start it is replaced, as Django does. Only
        where the socket cannot tell (psycopg2 with unread bytes) does ``SELECT 1`` run.
        """
        neon = self.neon
        if (
            self.connection is None
            or self.in_atomic_block
            or not self.autocommit  # neon_in_transaction(), inlined: this runs per cursor
            or self.neon_connecting  # Django's set-up: the connect retry covers it as a unit
            or neon is None
        ):
            super().close_if_health_check_failed()
            return
        if (
            self.settings_dict["CONN_MAX_AGE"]  # 0 means "per request", Django's boundaries
            and self.close_at is not None
            and time.monotonic() >= self.close_at
        ):
            self.close()  # older than CONN_MAX_AGE: Django checks only at request boundaries
            return
        idle_limit = neon.get("IDLE_TIMEOUT")
        now = time.time()  # the wall clock: a frozen container's monotonic timers stop
        idle, self._neon_used_at = now - self._neon_used_at, now
        if idle_limit is not None and idle > idle_limit:
            self.close()  # idle too long on an elastic platform: Neon's advice
            return
        state = liveness(self.connection)
        alive = self.is_usable() if state is Liveness.UNSURE else state is Liveness.ALIVE
        # Django resets health_check_done at each request boundary: a session found dead
        # there is replaced silently, as Django does; one found dead since is reported
        in_use: bool = self.health_check_done  # type: ignore[has-type]  # untyped in the stubs
        self.health_check_done = True  # so Django's own SELECT 1 is not sent as well
        if alive:
            return
        direct = self.neon_connected_direct
        self.close()
        if direct and in_use:
            raise OperationalError(
                f"neon-connect: the server ended the direct() session of "
                f"DATABASES[{self.alias!r}] (a suspend, a restart or pg_terminate_backend): its "
                "LISTEN registrations, advisory locks, temp tables and SET values are gone. "
                "Set them up again; the next use connects afresh."
            )

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()  # reads the routed settings
        mask_driver_secrets(params)  # error pages that print frame locals show ****
        return params

    def connect(self) -> None:
        """Django's ``connect()``, retried as one unit while a compute wakes or restarts.

        The unit is the whole set-up: the driver's connect, then ``set_autocommit()`` and
        ``init_connection_state()`` (time zone, role), which can fail on a connection that a
        suspend or a pooler restart has just cut. Those statements are safe to send again; a
        ``connection_created`` receiver's are the user's, so a failure there is not retried.
        """
        if self.neon is None:  # the engine named without neon_django.config(): Django's own
            super().connect()
            return
        endpoint = self.neon_endpoint(direct=self.neon_wants_direct)
        policy = self.neon_retry_policy()
        connect = super().connect
        user_error: list[Exception] = []

        def set_up() -> None:
            self._neon_set_up = False
            try:
                connect()
            except Exception as exc:
                if self._neon_set_up:  # a connection_created receiver failed: not retried
                    user_error.append(exc)
                    return
                self._neon_discard()
                raise

        connecting, self.neon_connecting = self.neon_connecting, True
        try:
            policy.call(set_up, endpoint=endpoint)
        finally:
            self.neon_connecting = connecting  # a receiver may connect another time inside
        self.neon_refuse_lone_pooler(endpoint)  # after the retry: its notes are about connecting
        if user_error:
            raise user_error[0]

    def neon_refuse_lone_pooler(self, endpoint: Endpoint) -> None:
        """Refuse a URL taken for a server where a transaction pooler answers (a lone non-Neon
        URL without ``pgbouncer=true``): server-side cursors, prepares and session state
        would break behind it. Asked once per process and endpoint (neon_connect._probes)."""
        if self.connection is None or not pooler_probe_wanted(endpoint):
            return
        params = self.get_connection_params()
        database = self.Database

        def connect() -> Any:
            return call_without_driver_frames(lambda: database.connect(**params))

        if answers_like_transaction_pooler(endpoint, self.connection, connect):
            self._neon_discard()
            raise ImproperlyConfigured(
                lone_pooler_message(endpoint, where=f"DATABASES[{self.alias!r}]")
            )

    def neon_endpoint(self, *, direct: bool | None = None) -> Endpoint:
        """The endpoint the open connection (or, given ``direct``, the next one) goes to."""
        neon = self.neon
        assert neon is not None
        # config() resolved both endpoints: the same objects label retry logs and error notes
        endpoints = neon["ENDPOINTS"]
        direct = self.neon_connected_direct if direct is None else direct
        return endpoints.session() if direct else endpoints.app

    def neon_retry_policy(self) -> RetryPolicy:
        neon = self.neon
        return _NO_RETRY if neon is None else neon["RETRY"]

    def make_cursor(self, cursor: Any) -> CursorWrapper:
        return CursorWrapper(cursor, self)

    def make_debug_cursor(self, cursor: Any) -> CursorDebugWrapper:
        return CursorDebugWrapper(cursor, self)

    def neon_reconnect_refused(self) -> None:
        """Replace a connection the pooler refused and closed, in the same transaction state.

        The refusal came at a transaction's first statement, so an ``atomic()`` block around
        it has run nothing yet: the new connection gets the block's bookkeeping (and its
        ``on_commit`` callbacks, which Django's ``connect()`` must not run early) and the
        driver's autocommit as they were. If no new connection can be made, the block is
        left as Django leaves one whose connection closed: it must roll back.
        """
        kept = {name: copy.copy(getattr(self, name)) for name in _TRANSACTION_STATE}
        self.run_commit_hooks_on_set_autocommit_on = False
        self._neon_discard()
        connected = False
        try:
            self.connect()
            connected = True
        finally:
            if not connected and not connection_lost(self.connection):
                self._neon_discard()  # a receiver failed on a live connection: not half set up
            for name, value in kept.items():
                setattr(self, name, value)
            if self.connection is None and self.in_atomic_block:
                self.closed_in_transaction = True
                self.needs_rollback = True
        self._set_autocommit(kept["autocommit"])  # type: ignore[attr-defined]  # not in stubs

    _neon_set_up = False
    """True once the connection is set up, while ``connection_created`` receivers run."""

    def init_connection_state(self) -> None:
        super().init_connection_state()
        self._neon_set_up = True

    def _neon_discard(self) -> None:
        """Drop a connection whose set-up failed, so the next attempt starts clean."""
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
        self.connection = None
        self.neon_connected_direct = None
        self.neon_session_guard = None
        self.neon_pooled = False

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # the driver's frames hold the password in clear: its error comes without them
        new_connection = super().get_new_connection
        connection = call_without_driver_frames(lambda: new_connection(conn_params))
        neon = self.neon
        if neon is not None:
            if _merge_begin is not None:
                _merge_begin(connection)
            direct = self.neon_connected_direct = self.neon_wants_direct
            # decided once per connection: guarded when it goes through a transaction pooler
            guard = neon.get("SESSION_GUARD", "error")
            pooled = not direct and neon["ENDPOINTS"].app.transaction_pooler
            self.neon_pooled = pooled
            self.neon_session_guard = guard if pooled and guard != "off" else None
            self._neon_guard_where = (
                f"DATABASES[{self.alias!r}]"  # per connection, not per statement
            )
            self._neon_used_at = time.time()
        return connection

    neon_session_guard: GuardMode | None = None
    """``error``/``warn`` on a connection through a transaction pooler, else None."""

    neon_pooled = False
    """True while the open connection goes through a transaction pooler (set per connection)."""

    _neon_guard_where = ""
    """How the guard's message names this alias (built once per connection)."""

    _neon_used_at = 0.0
    """When the open connection was last checked for use (wall clock)."""

    def neon_explain(self, error: BaseException) -> None:
        """Name the cause of an error that means something else behind a transaction pooler
        (SQLSTATE 25006 left by another client, PgBouncer's query_wait_timeout)."""
        if self.neon_transaction_pooler and not self.neon_connected_direct:
            explain_pooler_error(error)

    def neon_check_statement(self, sql: Any) -> None:
        """Stop a statement that would leave session state for the pooler's next client."""
        mode = self.neon_session_guard
        if mode is not None and not self.neon_connecting and isinstance(sql, str):
            check_statement(sql, mode=mode, where=self._neon_guard_where)

    def _commit(self) -> None:
        """Django's commit; a ``COMMIT`` cut with its connection says the outcome is unknown.

        Raises Django's ``OperationalError`` whose ``__cause__`` is
        :class:`neon_connect.CommitOutcomeUnknown`: the write may or may not be stored; or,
        when the connection is found lost before ``COMMIT`` is sent,
        :class:`neon_connect.CommitNotSent`: nothing was stored.
        A refusal by a live server (a definite rollback) is unchanged. With psycopg2 the same
        holds; only where psycopg 3 cannot be imported at all is psycopg2's error passed on.
        """
        if self.connection is None:
            return
        with debug_transaction(self, "COMMIT"), self.wrap_database_errors:
            refuse_commit_if_lost(self.connection)  # psycopg 3 only: no bytes sent
            try:
                self.connection.commit()
            except Exception as exc:
                if type(exc).__module__.partition(".")[0] not in ("psycopg", "psycopg2"):
                    raise
                try:  # CommitOutcomeUnknown is a psycopg error class: psycopg 3 must import
                    from neon_connect._commit_outcome import (
                        is_commit_outcome_unknown,
                        outcome_unknown,
                    )
                except ImportError:
                    raise exc from None

                if not is_commit_outcome_unknown(exc, self.connection):
                    raise
                unknown = outcome_unknown(exc)
                if isinstance(unknown, self.Database.Error):
                    raise unknown from exc  # Django wraps it into its OperationalError
                # psycopg2: Django wraps only its driver's classes, so wrap it here the same way
                unknown.__cause__ = exc
                raise OperationalError(*unknown.args) from unknown

    def close_if_unusable_or_obsolete(self) -> None:
        """Django's check at each request's start and end; after SIGTERM, the end of the
        request closes its connection for good (``close_on_sigterm``)."""
        neon = self.neon
        if (
            self.connection is not None
            and neon is not None
            and neon.get("CLOSE_ON_SIGTERM")
            and stopping()
            and not self.in_atomic_block
        ):
            self.close()
            return
        super().close_if_unusable_or_obsolete()
        self.neon_released = self.connection is not None  # kept, unused until the next use

    neon_released = False
    """True from a request's end until the next use: only then may SIGTERM's closer, which
    interrupts the main thread anywhere, close this connection (``_conn_max_age.py``)."""

    def close(self) -> None:
        super().close()
        if self.connection is None:
            self.neon_connected_direct = None
            self.neon_session_guard = None
