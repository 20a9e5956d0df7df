"""``neon_django.config()``: one ``DATABASES`` alias that knows both endpoints.

The alias connects to the pooled endpoint; the direct endpoint rides along in
``settings.DATABASES[alias]["NEON"]["DIRECT"]`` (Django ignores unknown keys), so pooled and
direct traffic share one alias, one set of models and one test database. The backend
(``neon_django.backend``) picks the endpoint each time it connects.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

from django.core.exceptions import ImproperlyConfigured

from neon_connect import (
    APP_VARS,
    DEFAULT_RETRY,
    DIRECT_VARS,
    POOLED_VARS,
    ConfigurationError,
    DoublePoolingError,
    Endpoint,
    Endpoints,
    RetryPolicy,
    Secret,
    SecretParams,
    UnsupportedStartupParameterError,
    libpq_params,
    libpq_version,
    psycopg_params,
    resolve,
)
from neon_connect._limits import MAX_CONNECTION_AGE
from neon_connect._params import connection_options
from neon_connect._platforms import IdleTimeout
from neon_connect._platforms import idle_timeout as resolve_idle_timeout
from neon_connect._secret import DriverSecret, scrubbed
from neon_connect._session_guard import GuardMode, guard_mode
from neon_connect._sigterm import CloseOnSigterm, on_sigterm
from neon_connect._sigterm import close_on_sigterm as resolve_close_on_sigterm

from ._conn_max_age import auto_conn_max_age, close_idle_at_sigterm

ENGINE = "neon_django.backend"


class NeonSettings(TypedDict):
    """``DATABASES[alias]["NEON"]``: written by :func:`config`, read by the backend, the
    system checks and ``neon_check``. Only what they read."""

    ENDPOINTS: Endpoints
    """The pair resolved once by config(): where the alias connects, for logs and checks."""
    DIRECT: dict[str, Any] | None
    """HOST, PORT, USER, PASSWORD, NAME and OPTIONS of the direct endpoint (None when the
    app endpoint serves both roles, or no direct endpoint is known)."""
    PREPARED_STATEMENTS: bool
    RETRY: RetryPolicy
    """How the backend retries a connect and a statement the pooler refused unforwarded."""
    ALLOW_MISMATCHED_ENDPOINTS: bool
    REPLICA_OF: str | None
    """The primary alias of a read replica (set by :func:`neon_django.databases`)."""
    IDLE_TIMEOUT: float | None
    """Seconds a kept connection may sit idle (wall clock, checked at use), or None."""
    CLOSE_ON_SIGTERM: bool
    """Close kept connections at SIGTERM (``neon_connect/_sigterm.py``)."""
    SESSION_GUARD: GuardMode
    """What happens to a statement that would leave session state on the pooler's server
    connection: ``error`` (stopped before it is sent), ``warn`` or ``off``."""


def neon_settings(db: Mapping[str, Any]) -> NeonSettings | None:
    """The ``NEON`` entry of a ``DATABASES`` alias, or None when config() did not build it."""
    neon: NeonSettings | None = db.get("NEON")
    return neon


def _register_app_check() -> None:
    """The check that ``neon_django`` is in ``INSTALLED_APPS``, registered by the settings
    that use it: without the app, ``migrate`` may run before the backend is ever imported."""
    from django.core import checks

    from ._checks import check_app_installed

    checks.register(check_app_installed)


def _is_psycopg3() -> bool:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


@scrubbed(ConfigurationError, raise_as=ImproperlyConfigured)
def config(
    url: str | Secret | None = None,
    *,
    direct_url: str | Secret | None = None,
    env: Mapping[str, str] | None = None,
    use_pooler: bool = True,
    allow_mismatched_endpoints: bool = False,
    conn_max_age: int | None | Literal["auto"] = "auto",
    conn_health_checks: bool | None = None,
    pool: bool | dict[str, Any] = False,
    options: Mapping[str, Any] | None = None,
    ssl_require: bool = False,
    test_options: dict[str, Any] | None = None,
    prepared_statements: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    session_guard: GuardMode = "error",
    idle_timeout: IdleTimeout = "auto",
    close_on_sigterm: CloseOnSigterm = "auto",
    pooler_prepared_statements: bool | None = None,
    retry_timeout: float | None = None,
    app_vars: Sequence[str] = APP_VARS,
    direct_vars: Sequence[str] = DIRECT_VARS,
    pooled_vars: Sequence[str] = POOLED_VARS,
) -> dict[str, Any]:
    """Return a ``DATABASES`` entry for Neon, read from the environment unless ``url`` is given.

    Behind a transaction pooler: server-side cursors off, psycopg's automatic prepares off
    (unless ``prepared_statements=True`` declares that the pooler tracks them, as
    Neon's PgBouncer >= 1.22 does) and no client pool. ``conn_max_age="auto"`` keeps one
    connection per thread to the pooler for 240 s (below Neon's 5-minute suspend) with health
    checks, and 0 in serverless functions and on direct endpoints (``_conn_max_age.py``); an
    explicit value wins, capped below the suspend on Neon. ``pool`` (Django 5.1+) is only
    allowed when the app endpoint is direct. ``options`` are extra ``OPTIONS``; ``ssl_require`` sets
    ``sslmode=require`` where the URL sets none (as dj-database-url does); ``retry`` (a
    :class:`neon_connect.RetryPolicy`, as on the engines) bounds the connect retry: a waking
    compute, a restarting server, a statement the pooler refused before forwarding it
    (``RetryPolicy(timeout=0)`` turns it off). ``allow_mismatched_endpoints=True`` accepts app and
    direct URLs that name different endpoints or databases (refused by default).
    ``idle_timeout="auto"`` drops a kept connection to the pooler that sat idle 10 s (wall
    clock, checked when it is used) on elastic platforms (Cloud Run, ECS/Fargate, Modal), as
    Neon advises; elsewhere there is no limit (``neon_connect/_platforms.py``).
    ``close_on_sigterm="auto"`` closes kept connections when the platform sends SIGTERM, on
    those same elastic platforms (True: anywhere; False: never), then hands the signal on to
    the server's own handler (``neon_connect/_sigterm.py``).
    ``session_guard`` decides what happens, behind a transaction pooler, to a statement that
    would leave session state for the next client (``SET search_path``, session advisory
    locks, ``LISTEN``, temp tables...): ``"error"`` stops it before it is sent (the default),
    ``"warn"`` logs it, ``"off"`` sends it. ``direct()`` connections are never guarded.

    Raises ``ImproperlyConfigured`` naming the variable or option; never shows the password,
    and chains no context that could (the error is raised afresh, outside the parser).
    """
    given = {
        "prepared_statements": prepared_statements is not False,
        "retry": retry is not DEFAULT_RETRY,
    }
    renamed = renamed_options(
        pooler_prepared_statements=pooler_prepared_statements, retry_timeout=retry_timeout
    )
    refuse_both(renamed, [name for name, set_ in given.items() if set_])
    prepared_statements = renamed.get("prepared_statements", prepared_statements)
    retry = renamed.get("retry", retry)
    endpoints = resolve(
        url,
        direct_url=direct_url,
        env=env,
        use_pooler=use_pooler,
        allow_mismatched_endpoints=allow_mismatched_endpoints,
        app_vars=app_vars,
        direct_vars=direct_vars,
        pooled_vars=pooled_vars,
    )
    environ = os.environ if env is None else env
    del url, direct_url, env  # error pages print locals: keep only masked values
    return settings_for(
        endpoints,
        environ=environ,
        allow_mismatched_endpoints=allow_mismatched_endpoints,
        conn_max_age=conn_max_age,
        conn_health_checks=conn_health_checks,
        pool=pool,
        options=options,
        ssl_require=ssl_require,
        test_options=test_options,
        prepared_statements=prepared_statements,
        retry=retry,
        session_guard=session_guard,
        idle_timeout=idle_timeout,
        close_on_sigterm=close_on_sigterm,
    )


_RENAMED = {
    "pooler_prepared_statements": "prepared_statements",
    "retry_timeout": "retry",
    "replica_retry_timeout": "replica_retry",
}
"""Old option names, still taken with a ``DeprecationWarning``: the engines' names won."""


def refuse_both(renamed: Mapping[str, Any], given: Sequence[str]) -> None:
    """An old name and its new one together: which should win is the user's to say."""
    old = {new: name for name, new in _RENAMED.items()}
    for name in given:
        if name in renamed:
            raise ConfigurationError(
                f"neon_django options {old[name]}= and {name}= are the same option, under "
                f"its old and new names: keep {name}= only."
            )


def renamed_options(**old: Any) -> dict[str, Any]:
    """The new options for the old names given (``None``: not given), each with a warning.

    ``retry_timeout=s`` becomes ``retry=RetryPolicy(timeout=s)``."""
    new: dict[str, Any] = {}
    for name, value in old.items():
        if value is None:
            continue
        warnings.warn(
            f"neon_django option {name}= is now {_RENAMED[name]}= (the names and types of "
            "neon_sqlalchemy's engines); the old name goes in a later release.",
            DeprecationWarning,
            stacklevel=4,  # the caller of config()/databases(), past the scrubbing decorator
        )
        if name.endswith("retry_timeout"):
            try:
                value = RetryPolicy(timeout=float(value))
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"neon_django option {name}={value!r} must be a number of seconds >= 0; "
                    f"better, use {_RENAMED[name]}=neon_connect.RetryPolicy(timeout=...)."
                ) from None
        new[_RENAMED[name]] = value
    return new


def settings_for(
    endpoints: Endpoints,
    *,
    environ: Mapping[str, str],
    allow_mismatched_endpoints: bool = False,
    conn_max_age: int | None | Literal["auto"] = "auto",
    conn_health_checks: bool | None = None,
    pool: bool | dict[str, Any] = False,
    options: Mapping[str, Any] | None = None,
    ssl_require: bool = False,
    test_options: dict[str, Any] | None = None,
    prepared_statements: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    session_guard: GuardMode = "error",
    idle_timeout: IdleTimeout = "auto",
    close_on_sigterm: CloseOnSigterm = "auto",
) -> dict[str, Any]:
    """:func:`config` for endpoints already resolved (``databases()`` resolves the primary
    and each replica once and carries the objects here, never a URL). ``environ`` decides
    the ``"auto"`` values (serverless, elastic platforms)."""
    _register_app_check()
    if isinstance(conn_max_age, str):
        if conn_max_age != "auto":
            raise ConfigurationError(
                f'neon_django.config(conn_max_age={conn_max_age!r}): use "auto" (the default), '
                "a number of seconds >= 0, or None."
            )
        conn_max_age = auto_conn_max_age(endpoints.app, environ)
    idle_timeout = resolve_idle_timeout(
        idle_timeout, app=endpoints.app, env=environ, where="neon_django.config"
    )
    close_on_sigterm = resolve_close_on_sigterm(
        close_on_sigterm, env=environ, where="neon_django.config"
    )
    app = endpoints.app
    if not app.database:
        raise ConfigurationError(
            f"{app.source} names no database (and no user for libpq's default): add "
            "/<dbname> to the URL (Neon's default is /neondb), or set PGDATABASE."
        )
    user_options = dict(options or {})
    if ssl_require and "sslmode" not in app.params:
        user_options.setdefault("sslmode", "require")
    _check_user_options(
        app,
        user_options,
        pool=pool,
        conn_max_age=conn_max_age,
        prepared=prepared_statements,
    )
    app_options = _options(app, user_options, prepared=prepared_statements)
    direct = endpoints.direct
    direct_settings = None
    if direct is not None and direct is not app:
        direct_settings = _connection_settings(
            direct, _options(direct, user_options, prepared=True)
        )

    session_guard = guard_mode(session_guard, setting="neon_django.config() session_guard")
    if not isinstance(retry, RetryPolicy):
        raise ConfigurationError(
            f"neon_django.config(retry={retry!r}): use a neon_connect.RetryPolicy, e.g. "
            "RetryPolicy(timeout=5); RetryPolicy(timeout=0) turns retrying off."
        )
    max_age = _conn_max_age(app, conn_max_age)
    # a pool: Django hands psycopg_pool its check when CONN_HEALTH_CHECKS is on
    kept = max_age != 0 or bool(pool)
    health = conn_health_checks if conn_health_checks is not None else kept
    if pool:
        app_options["pool"] = _pool_options(pool)

    # Django's keys, written out: the URL was parsed and checked once, in the core.
    settings: dict[str, Any] = {
        "ENGINE": ENGINE,
        **_connection_settings(app, app_options),
        "CONN_MAX_AGE": max_age,
        "CONN_HEALTH_CHECKS": health,
        "DISABLE_SERVER_SIDE_CURSORS": app.transaction_pooler,
    }
    if test_options:
        settings["TEST"] = test_options
    settings["NEON"] = NeonSettings(
        ENDPOINTS=endpoints,
        DIRECT=direct_settings,
        PREPARED_STATEMENTS=prepared_statements,
        RETRY=retry,
        ALLOW_MISMATCHED_ENDPOINTS=allow_mismatched_endpoints,
        REPLICA_OF=None,
        SESSION_GUARD=session_guard,
        IDLE_TIMEOUT=idle_timeout,
        CLOSE_ON_SIGTERM=close_on_sigterm,
    )
    if close_on_sigterm:
        on_sigterm(close_idle_at_sigterm, close_idle_at_sigterm, where="neon_django.config")
    return settings


def _connection_settings(endpoint: Endpoint, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "NAME": endpoint.database or "",
        "USER": endpoint.user or "",
        # a str for Django and the driver; its repr is masked, so frame locals and reprs
        # that hold these settings (ours, Django's) never show it
        "PASSWORD": DriverSecret(endpoint.password or ""),
        "HOST": endpoint.host,
        "PORT": str(endpoint.port),
        "OPTIONS": options,
    }


def _options(endpoint: Endpoint, user_options: dict[str, Any], *, prepared: bool) -> dict[str, Any]:
    """The core's driver parameters (prepares decided there), then the user's OPTIONS."""
    params = (
        psycopg_params(endpoint, prepared_statements=prepared)
        if _is_psycopg3()
        else libpq_params(endpoint, client_version=libpq_version(driver="psycopg2"))
    )
    options: dict[str, Any] = SecretParams({**connection_options(params), **user_options})
    if not _is_psycopg3():
        options.pop("prepare_threshold", None)  # psycopg 3 only; psycopg2 never prepares
    return options


def _check_user_options(
    app: Endpoint,
    options: dict[str, Any],
    *,
    pool: bool | dict[str, Any],
    conn_max_age: int | None,
    prepared: bool,
) -> None:
    if "pool" in options:
        raise ConfigurationError(
            "Pass the client pool as neon_django.config(pool=...), not in options."
        )
    if app.transaction_pooler:
        if pool:
            raise DoublePoolingError(
                f"neon_django.config(pool=...) asks for a client-side pool on the pooled endpoint "
                f"{app.display_host}. That is double pooling: each process would hold idle "
                "connections that PgBouncer could give to others. Drop pool= (PgBouncer already "
                "pools), or use it with a direct endpoint (use_pooler=False)."
            )
        startup = options.get("options")
        if startup and "-c" in str(startup):
            raise UnsupportedStartupParameterError(
                f"OPTIONS['options'] sets startup parameters on the pooled endpoint {app.display_host}; "
                "a transaction pooler rejects them. Use SET LOCAL inside a transaction, "
                "ALTER ROLE ... SET ..., or neon_django.direct() for session settings."
            )
        if options.get("prepare_threshold") is not None and not prepared and _is_psycopg3():
            raise ConfigurationError(
                f"OPTIONS['prepare_threshold'] turns psycopg's prepares on at the pooled endpoint "
                f"{app.display_host}, where another client's statements collide with them. Drop "
                "it, or pass neon_django.config(prepared_statements=True) if the pooler "
                "tracks them (PgBouncer >= 1.22 with max_prepared_statements, as Neon's does)."
            )
        if options.get("assume_role"):
            raise UnsupportedStartupParameterError(
                "OPTIONS['assume_role'] runs SET ROLE per connection, which leaks between clients "
                "behind a transaction pooler. Grant the role to the user instead, or connect as it."
            )
    if pool and conn_max_age != 0:  # None (kept for ever) too: Django refuses it with a pool
        raise ConfigurationError(
            f"neon_django.config(pool=..., conn_max_age={conn_max_age!r}): a pool needs "
            'conn_max_age=0 or "auto" (the default): Django\'s pool keeps the connections.'
        )
    if pool:
        import django

        if django.VERSION < (5, 1):
            raise ConfigurationError("neon_django.config(pool=...) needs Django 5.1 or later.")


def _conn_max_age(app: Endpoint, conn_max_age: int | None) -> int | None:
    if conn_max_age is not None and conn_max_age < 0:
        raise ConfigurationError(
            "neon_django.config(conn_max_age=...) must be >= 0 seconds or None."
        )
    if app.is_neon and (conn_max_age is None or conn_max_age > MAX_CONNECTION_AGE):
        return MAX_CONNECTION_AGE
    return conn_max_age


def _pool_options(pool: bool | dict[str, Any]) -> dict[str, Any]:
    """Django's psycopg pool, tuned for Neon: idle connections dropped well before the
    suspend. Its check at checkout is Django's to pass (``CONN_HEALTH_CHECKS``, on by
    default with a pool): a ``check`` here too made Django's pool raise ``TypeError``."""
    options: dict[str, Any] = dict(pool) if isinstance(pool, dict) else {}
    if "check" in options:
        raise ConfigurationError(
            "neon_django.config(pool={'check': ...}): Django passes the pool's check itself. "
            "Drop it; conn_health_checks=True (the default with a pool) checks each connection "
            "at checkout, conn_health_checks=False does not."
        )
    options.setdefault("max_idle", 120.0)  # well below Neon's 5-minute suspend
    return options
