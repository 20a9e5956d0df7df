"""``create_engine()`` and ``create_async_engine()`` for Neon's pooled and direct endpoints."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.ext.asyncio import create_async_engine as _sa_create_async_engine
from sqlalchemy.pool import NullPool

from neon_connect import (
    DEFAULT_RETRY,
    ConfigurationError,
    DoublePoolingError,
    Endpoint,
    RetryPolicy,
    Secret,
    asyncpg_params,
    libpq_params,
    libpq_version,
    psycopg_params,
    resolve,
)
from neon_connect._limits import MAX_CONNECTION_AGE
from neon_connect._params import connection_options, socket_keepalives
from neon_connect._platforms import IdleTimeout
from neon_connect._platforms import idle_timeout as resolve_idle_timeout
from neon_connect._probes import (
    answers_like_transaction_pooler,
    lone_pooler_message,
    pooler_probe_wanted,
)
from neon_connect._secret import mask_driver_secrets, scrubbed
from neon_connect._session_guard import GuardMode, guard_mode
from neon_connect._sigterm import CloseOnSigterm
from neon_connect._sigterm import close_on_sigterm as resolve_close_on_sigterm

from ._events import (
    PoolerProbe,
    add_begin_with_first_statement,
    add_close_on_sigterm,
    add_commit_outcome,
    add_idle_limit,
    add_liveness_check,
    add_pooler_error_notes,
    add_retry,
    add_socket_keepalives,
    add_statement_listeners,
    dispose_after_fork,
)

logger = logging.getLogger("neon_sqlalchemy")
Driver = Literal["psycopg", "psycopg2", "asyncpg"]
_POOL_KWARGS = ("pool_size", "max_overflow", "pool_timeout", "pool_use_lifo", "pool_recycle")


class NeonClientPoolWarning(UserWarning):
    """A client-side pool was explicitly allowed on top of a transaction pooler."""


@scrubbed(ConfigurationError)
def endpoint_for(
    url: str | URL | Secret | None,
    *,
    direct: bool,
    direct_url: str | URL | Secret | None = None,
    env: Mapping[str, str] | None = None,
    use_pooler: bool = True,
    allow_mismatched_endpoints: bool = False,
) -> Endpoint:
    """The endpoint an engine built from ``url`` (or the environment) would connect to.

    ``direct_url`` names the direct endpoint beside ``url``; the pair is refused when the two
    reach different databases, as the same pair from the environment is, unless
    ``allow_mismatched_endpoints=True``.
    """
    endpoint, _pooled = _resolve(
        url,
        direct_url,
        direct=direct,
        env=env,
        use_pooler=use_pooler,
        allow_mismatched_endpoints=allow_mismatched_endpoints,
    )
    return endpoint


def _resolve(
    url: str | URL | Secret | None,
    direct_url: str | URL | Secret | None,
    *,
    direct: bool,
    env: Mapping[str, str] | None,
    use_pooler: bool,
    allow_mismatched_endpoints: bool,
) -> tuple[Endpoint, Endpoint]:
    """The endpoint to connect to, and the pooled one (whose variable may name the driver)."""
    text, direct_text = _secret(url), _secret(direct_url)
    del url, direct_url  # error pages print locals: keep only masked values
    endpoints = resolve(
        text,
        direct_url=direct_text,
        env=env,
        use_pooler=use_pooler,
        allow_mismatched_endpoints=allow_mismatched_endpoints,
    )
    return (endpoints.session() if direct else endpoints.app), endpoints.app


def _driver_named(
    url: str | URL | Secret | None,
    endpoint: Endpoint,
    pooled: Endpoint,
    env: Mapping[str, str] | None,
) -> Driver | None:
    """The driver ``postgresql+<driver>://`` names: in ``url``; without one, in the variable
    ``endpoint`` came from, else in the ``pooled`` endpoint's, as SQLAlchemy itself reads
    ``DATABASE_URL=postgresql+psycopg2://...``."""
    if url is not None:
        return _driver_from(url)
    variables = env if env is not None else os.environ
    for source in (endpoint.source, pooled.source):
        named = _driver_from(variables.get(source.removeprefix("derived from ")))
        if named is not None:
            return named
    return None


def _secret(url: str | URL | Secret | None) -> str | Secret | None:
    return Secret(url.render_as_string(hide_password=False)) if isinstance(url, URL) else url


def _driver_from(url: str | URL | Secret | None) -> Driver | None:
    """The driver named by ``postgresql+<driver>://``, read from the scheme alone."""
    if url is None:
        return None
    if isinstance(url, URL):
        name = url.drivername
    else:
        text = url.reveal() if isinstance(url, Secret) else str(url)
        name = text.strip().partition("://")[0] if "://" in text else ""
    driver = name.partition("+")[2].lower()
    return driver if driver in ("psycopg", "psycopg2", "asyncpg") else None  # type: ignore[return-value]


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid.uuid4()}__"


def _connect_args(
    endpoint: Endpoint, driver: Driver, user_args: dict[str, Any], *, prepared_statements: bool
) -> dict[str, Any]:
    """The core's driver parameters (prepares decided there), then the user's connect_args."""
    if driver == "asyncpg":
        args = asyncpg_params(endpoint, prepared_statements=prepared_statements)
        if args.get("statement_cache_size") == 0:
            # SQLAlchemy's half of the recipe: its own statement cache off, and names that
            # cannot collide on a server connection another client prepared statements on.
            args.update(
                prepared_statement_cache_size=0,
                prepared_statement_name_func=_unique_statement_name,
            )
    elif driver == "psycopg":
        args = psycopg_params(endpoint, prepared_statements=prepared_statements)
    else:  # psycopg2: its libpq is its own
        args = libpq_params(endpoint, client_version=libpq_version(driver="psycopg2"))
    if endpoint.transaction_pooler and not prepared_statements:
        _refuse_prepares(user_args, endpoint)
    return {**connection_options(args), **user_args}


_PREPARES_ON = {
    "prepare_threshold": None,
    "statement_cache_size": 0,
    "prepared_statement_cache_size": 0,
}
"""connect_args that turn prepared statements on, unless they hold these values."""


def _refuse_prepares(user_args: dict[str, Any], endpoint: Endpoint) -> None:
    asked = [k for k, off in _PREPARES_ON.items() if k in user_args and user_args[k] != off]
    if asked:
        raise ConfigurationError(
            f"connect_args {', '.join(asked)} turn prepared statements on at the pooled "
            f"endpoint {endpoint.display_host}, where another client's statements collide with "
            "them. Drop them, or pass prepared_statements=True if the pooler tracks them "
            "(PgBouncer >= 1.22 with max_prepared_statements, as Neon's does)."
        )


def _engine_kwargs(
    endpoint: Endpoint, kwargs: dict[str, Any], *, allow_client_pool: bool, factory: str
) -> dict[str, Any]:
    pool_asked = [k for k in _POOL_KWARGS if k in kwargs]
    poolclass = kwargs.get("poolclass")
    if poolclass is not None and poolclass is not NullPool:
        pool_asked.append("poolclass")
    if endpoint.transaction_pooler:
        if not allow_client_pool:
            if pool_asked:
                raise DoublePoolingError(
                    f"{factory}({', '.join(f'{k}=...' for k in pool_asked)}) asks for a client-side "
                    f"pool on the pooled endpoint {endpoint.display_host}. That is double pooling: "
                    "every process would hold connections PgBouncer could give to others. Drop "
                    "the pool arguments (PgBouncer already pools), use direct=True, or pass "
                    "allow_client_pool=True to keep a small pool anyway."
                )
            kwargs["poolclass"] = NullPool
        else:
            warnings.warn(
                f"{factory}(allow_client_pool=True): a client pool on top of PgBouncer; keeping it "
                "small (2) and returning connections promptly, as Neon advises.",
                NeonClientPoolWarning,
                stacklevel=3,
            )
            kwargs.setdefault("pool_size", 2)
            kwargs.setdefault("max_overflow", 0)
            kwargs.setdefault("pool_timeout", 10)
            kwargs.setdefault("pool_recycle", MAX_CONNECTION_AGE)
            kwargs.setdefault("pool_pre_ping", False)  # the checkout check (add_liveness_check)
            kwargs.setdefault("pool_reset_on_return", "rollback")
    elif kwargs.get("poolclass") is not NullPool:
        kwargs.setdefault("pool_pre_ping", False)  # the checkout check (add_liveness_check)
        kwargs.setdefault("pool_recycle", MAX_CONNECTION_AGE)
    return kwargs


def _sa_url(endpoint: Endpoint, driver: Driver) -> URL:
    """Where to connect, for SQLAlchemy; the password travels in ``connect_args`` only."""
    return URL.create(
        f"postgresql+{driver}",
        username=endpoint.user,
        host=endpoint.host or None,
        port=endpoint.port,
        database=endpoint.database,
    )


def _arguments(
    endpoint: Endpoint,
    driver: Driver,
    kwargs: dict[str, Any],
    *,
    allow_client_pool: bool,
    prepared_statements: bool,
    factory: str,
) -> tuple[URL, dict[str, Any]]:
    """The URL and keyword arguments for SQLAlchemy's own factory (shared by sync and async)."""
    connect_args = _connect_args(
        endpoint, driver, kwargs.pop("connect_args", {}), prepared_statements=prepared_statements
    )
    # SQLAlchemy's `cparams` dict (shown among a frame's locals on error pages) gets the
    # password from connect_args alone (the URL has none), as a value whose repr is masked:
    # a str subclass for libpq drivers (they call str()), a callable for asyncpg (exact str).
    if endpoint.password and "password" not in connect_args:
        connect_args["password"] = (
            Secret(endpoint.password).reveal if driver == "asyncpg" else endpoint.password
        )
    mask_driver_secrets(connect_args)
    engine_kwargs = _engine_kwargs(
        endpoint, kwargs, allow_client_pool=allow_client_pool, factory=factory
    )
    return _sa_url(endpoint, driver), {"connect_args": connect_args, **engine_kwargs}


def _require_asyncpg() -> None:
    """One clear error, instead of SQLAlchemy's bare ``ModuleNotFoundError`` at first use."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        pass
    else:
        return
    raise ModuleNotFoundError(
        "create_async_engine(driver='asyncpg') needs asyncpg, which is not installed: "
        'pip install "neon-connect[asyncpg]" (or use the default driver, psycopg).',
        name="asyncpg",
    )


def _pooler_probe(endpoint: Endpoint, *, client_pool: bool) -> PoolerProbe | None:
    """Refuse a client pool on a URL taken for a server where a transaction pooler answers
    (a lone non-Neon URL without ``pgbouncer=true``); warn once with ``NullPool``."""
    if not pooler_probe_wanted(endpoint):
        return None
    warned: list[bool] = []

    def probe(conn: Any, connect: Callable[[], Any]) -> None:
        if not answers_like_transaction_pooler(endpoint, conn, connect):
            return
        message = lone_pooler_message(endpoint, where="create_engine()")
        if client_pool:
            with contextlib.suppress(Exception):
                conn.close()
            raise DoublePoolingError(message)
        if not warned:
            warned.append(True)
            logger.warning("neon-connect: %s", message)

    return probe


@dataclass(frozen=True)
class _Keeping:
    """What an engine that keeps connections does with them on this platform."""

    idle_limit: float | None
    idle_timeout_given: bool
    close_on_sigterm: bool
    where: str


def _keeping(
    endpoint: Endpoint,
    env: Mapping[str, str] | None,
    *,
    idle_timeout: IdleTimeout,
    close_on_sigterm: CloseOnSigterm,
    where: str,
) -> _Keeping:
    """The ``idle_timeout`` and ``close_on_sigterm`` options, with ``"auto"`` read from the
    platform (``neon_connect/_platforms.py``, ``neon_connect/_sigterm.py``)."""
    environ = os.environ if env is None else env
    return _Keeping(
        idle_limit=resolve_idle_timeout(idle_timeout, app=endpoint, env=environ, where=where),
        idle_timeout_given=idle_timeout != "auto",
        close_on_sigterm=resolve_close_on_sigterm(close_on_sigterm, env=environ, where=where),
        where=where,
    )


def _finish(
    engine: Engine,
    endpoint: Endpoint,
    retry: RetryPolicy,
    session_guard: GuardMode,
    keeping: _Keeping | None,
) -> None:
    """Install the listeners; ``keeping`` None: the options were not given (replicas)."""
    keeping = keeping or _Keeping(None, False, False, "")
    session_guard = guard_mode(session_guard, setting="create_engine() session_guard")
    pooled = not isinstance(engine.pool, NullPool)
    probe = _pooler_probe(endpoint, client_pool=pooled)
    add_retry(engine, endpoint, retry, pooler_probe=probe)
    add_statement_listeners(
        engine,
        endpoint,
        rerun=retry if retry.timeout > 0 else None,
        session_guard=session_guard,
    )
    add_commit_outcome(engine)
    dispose_after_fork(engine)
    if pooled:
        add_liveness_check(engine)
        if keeping.idle_limit is not None:
            add_idle_limit(engine, keeping.idle_limit)
        if keeping.close_on_sigterm:
            add_close_on_sigterm(engine)
    elif keeping.idle_limit is not None and keeping.idle_timeout_given:
        raise ConfigurationError(
            f"{keeping.where}(idle_timeout={keeping.idle_limit:g}): the engine keeps no "
            "connection (NullPool, the default on a transaction pooler), so nothing can sit "
            "idle. Drop idle_timeout, or keep connections with allow_client_pool=True."
        )
    if endpoint.transaction_pooler:
        add_pooler_error_notes(engine)
    if engine.dialect.driver == "psycopg":  # sync and async
        add_begin_with_first_statement(engine)
    if engine.dialect.driver == "asyncpg":
        add_socket_keepalives(engine, socket_keepalives(endpoint))


@scrubbed(ConfigurationError)
def create_engine(
    url: str | URL | Secret | None = None,
    *,
    direct: bool = False,
    direct_url: str | URL | Secret | None = None,
    allow_client_pool: bool = False,
    prepared_statements: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    env: Mapping[str, str] | None = None,
    use_pooler: bool = True,
    allow_mismatched_endpoints: bool = False,
    session_guard: GuardMode = "error",
    idle_timeout: IdleTimeout = "auto",
    close_on_sigterm: CloseOnSigterm = "auto",
    **kwargs: Any,
) -> Engine:
    """A sync engine on the pooled endpoint (default) or the direct one (``direct=True``).

    Pooled: ``NullPool`` (PgBouncer pools; a client pool on top is refused unless
    ``allow_client_pool=True``) and psycopg's automatic prepares off (unless
    ``prepared_statements=True`` declares the pooler tracks them). Direct: a normal pool
    whose connections are checked at checkout without a round trip (a dead one is replaced)
    and recycled below Neon's suspend. Other keyword
    arguments go to ``sqlalchemy.create_engine``; ``connect_args`` are merged.
    ``session_guard`` (on a transaction pooler): a statement that would leave session state
    for the next client (``SET search_path``, session advisory locks, ``LISTEN``, temp
    tables...) is stopped before it is sent (``"error"``, the default), logged (``"warn"``)
    or sent (``"off"``). ``direct_url`` names the direct endpoint beside ``url`` (see
    :func:`endpoint_for`). ``idle_timeout`` (a pool only): a kept connection idle longer
    than that many seconds, on the wall clock, is replaced at checkout; ``"auto"`` is 10 s to
    the pooler on an elastic platform (Cloud Run, ECS/Fargate, Modal), as Neon advises, and
    no limit elsewhere.
    """
    endpoint, pooled = _resolve(
        url,
        direct_url,
        direct=direct,
        env=env,
        use_pooler=use_pooler,
        allow_mismatched_endpoints=allow_mismatched_endpoints,
    )
    driver = _driver_named(url, endpoint, pooled, env) or "psycopg"
    del url, direct_url  # error pages print locals: keep only masked values
    keeping = _keeping(
        endpoint,
        env,
        idle_timeout=idle_timeout,
        close_on_sigterm=close_on_sigterm,
        where="neon_sqlalchemy.create_engine",
    )
    if driver == "asyncpg":
        driver = "psycopg"  # a sync engine cannot use asyncpg
    sa_url, arguments = _arguments(
        endpoint,
        driver,
        kwargs,
        allow_client_pool=allow_client_pool,
        prepared_statements=prepared_statements,
        factory="create_engine",
    )
    engine = sqlalchemy.create_engine(sa_url, **arguments)
    _finish(engine, endpoint, retry, session_guard, keeping)
    return engine


@scrubbed(ConfigurationError)
def create_async_engine(
    url: str | URL | Secret | None = None,
    *,
    direct: bool = False,
    direct_url: str | URL | Secret | None = None,
    driver: Literal["psycopg", "asyncpg"] | None = None,
    allow_client_pool: bool = False,
    prepared_statements: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    env: Mapping[str, str] | None = None,
    use_pooler: bool = True,
    allow_mismatched_endpoints: bool = False,
    session_guard: GuardMode = "error",
    idle_timeout: IdleTimeout = "auto",
    close_on_sigterm: CloseOnSigterm = "auto",
    **kwargs: Any,
) -> AsyncEngine:
    """The async twin of :func:`create_engine`, with psycopg (default) or asyncpg.

    With asyncpg on the pooled endpoint: ``NullPool``, both statement caches off and unique
    prepared-statement names; Neon URL parameters are translated (``sslmode`` becomes
    ``ssl``, ``channel_binding`` is dropped), so a Neon console URL just works.
    """
    endpoint, pooled = _resolve(
        url,
        direct_url,
        direct=direct,
        env=env,
        use_pooler=use_pooler,
        allow_mismatched_endpoints=allow_mismatched_endpoints,
    )
    chosen: Driver = driver or _driver_named(url, endpoint, pooled, env) or "psycopg"
    del url, direct_url  # error pages print locals: keep only masked values
    if chosen == "asyncpg":
        _require_asyncpg()
    keeping = _keeping(
        endpoint,
        env,
        idle_timeout=idle_timeout,
        close_on_sigterm=close_on_sigterm,
        where="neon_sqlalchemy.create_async_engine",
    )
    if chosen == "psycopg2":
        chosen = "psycopg"  # psycopg2 has no async mode
    sa_url, arguments = _arguments(
        endpoint,
        chosen,
        kwargs,
        allow_client_pool=allow_client_pool,
        prepared_statements=prepared_statements,
        factory="create_async_engine",
    )
    engine = _sa_create_async_engine(sa_url, **arguments)
    _finish(engine.sync_engine, endpoint, retry, session_guard, keeping)
    return engine
