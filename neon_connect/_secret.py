"""A value that holds a connection string or password and never shows it.

Error pages that print local variables (Django's technical 500 page, Sentry,
``traceback.TracebackException(capture_locals=True)``) call ``repr`` on every local. Inside
neon-connect a connection string travels as a :class:`Secret`, and driver parameters as a
:class:`SecretParams`, so those pages show ``****`` where the password would be.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

MASK = "****"
SECRET_KEYS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
"""libpq keywords whose values are secrets (``sslpassword`` unlocks the client key)."""


def is_secret_key(key: str) -> bool:
    """True for ``password``/``sslpassword`` in any letter case."""
    return key.lower() in SECRET_KEYS


class Secret:
    """A string whose ``repr`` and ``str`` are ``****``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a neon_connect Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


class DriverSecret(str):
    """A password as drivers need it (a real ``str``), with a masked ``repr``.

    Only for values handed to a driver through a dict neon-connect does not own (SQLAlchemy's
    ``cparams``): ``str()`` of it, which the drivers call, is the plain password.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


def mask_driver_secrets(params: dict[str, Any]) -> None:
    """Wrap the secret values of ``params`` (in place) as :class:`DriverSecret`."""
    for key, value in params.items():  # is_secret_key(), inlined: this runs per connect
        if key.lower() in SECRET_KEYS and isinstance(value, str) and value:
            params[key] = DriverSecret(value)


class SecretParams(dict[str, Any]):
    """Driver keyword arguments whose ``repr`` masks the password and ``sslpassword``."""

    def __repr__(self) -> str:
        shown = {k: (MASK if is_secret_key(k) and v else v) for k, v in self.items()}
        return f"{type(self).__name__}({shown!r})"

    __str__ = __repr__


def scrubbed(
    catch: type[Exception], raise_as: Callable[[str], Exception] | None = None
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Re-raise ``catch`` errors as a fresh exception, outside the ``except`` block.

    The fresh exception has no ``__context__`` and its traceback starts at the wrapper,
    whose own arguments are deleted first: nothing that held the raw input (the parser's
    frames, a driver's error) is reachable from it. ``raise_as`` builds the new exception
    from the message (default: the same class).
    """

    # An entry point that calls another (databases() calls config()) gets the inner one's
    # error already converted to `raise_as`: catch that too, so our frames drop their input.
    caught: tuple[type[Exception], ...] = (catch,)
    if isinstance(raise_as, type) and issubclass(raise_as, Exception):
        caught = (catch, raise_as)

    def decorate(func: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return func(*args, **kwargs)
            except caught as exc:
                build: Callable[[str], Exception] = raise_as or type(exc)
                message = str(exc)
            del args, kwargs
            raise build(message)

        return wrapper

    return decorate


def without_driver_frames(exc: E) -> E:
    """A copy of a driver's connect error with no traceback and no chained context.

    Drivers build their connection string from our masked values with ``str()``, so their
    own frames (psycopg's ``connect()``, psycopg2's, asyncpg's) hold the password in clear,
    and pages that print every frame's locals (Django's ``DEBUG`` 500 page, Sentry) show it.
    The copy keeps what callers catch and read: the class, the message, the SQLSTATE and the
    notes. Falls back to ``exc`` itself if the class cannot be copied.
    """
    try:
        fresh = copy.copy(exc)  # BaseException.__reduce__: class, args and __dict__ only
    except Exception:
        return exc
    if type(fresh) is not type(exc) or fresh.args != exc.args:
        return exc
    return fresh


def call_without_driver_frames(connect: Callable[[], T]) -> T:
    """``connect()``; its error is re-raised as :func:`without_driver_frames` makes it,
    outside the ``except`` block, so no driver frame is reachable from it."""
    try:
        return connect()
    except Exception as exc:
        fresh = without_driver_frames(exc)
    _raise_alone(fresh)


async def acall_without_driver_frames(connect: Callable[[], Awaitable[T]]) -> T:
    """The async twin of :func:`call_without_driver_frames`."""
    try:
        return await connect()
    except Exception as exc:
        fresh = without_driver_frames(exc)
    _raise_alone(fresh)


def _raise_alone(exc: BaseException) -> NoReturn:
    """Raise ``exc`` with no implicit context. Outside our ``except`` block there is none,
    unless the caller itself runs inside a handler: on Python 3.10 asyncio resumes a
    coroutine from inside the handler of the very error the driver raised."""
    try:
        raise exc
    finally:
        exc.__context__ = None
