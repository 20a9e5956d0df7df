"""``neon_django.databases()``: ``default`` plus one alias per Neon read replica.

DATABASES = neon_django.databases()        # default + replica_1, replica_2, ... (from the env)
DATABASE_ROUTERS = ["neon_django.routers.ReplicaRouter"]
MIDDLEWARE = ["neon_django.routers.ReplicaStickinessMiddleware", ...]

Replica URLs come from ``replica_urls=`` or ``DATABASE_URL_REPLICA`` (comma-separated); see
:mod:`neon_connect._replicas` for the rules. Each replica alias gets the same settings as
``default`` (pooled endpoint, TLS, prepares off at the pooler), a short connect retry so a
replica that is down is skipped quickly, and ``TEST: {"MIRROR": "default"}``: tests read the
test database through the replica, as Django mirrors do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from neon_connect import ConfigurationError, RetryPolicy, Secret, resolve
from neon_connect._replicas import REPLICA_VAR, resolve_replica_pairs
from neon_connect._resolve import APP_VARS, DIRECT_VARS, POOLED_VARS
from neon_connect._secret import scrubbed

from ._config import refuse_both, renamed_options, settings_for
from ._conn_max_age import auto_conn_max_age

REPLICA_RETRY = RetryPolicy(timeout=2.0)
"""A replica that is down is skipped quickly: the router then reads from the primary."""

REPLICA_ALIAS = "replica_{n}"
"""How replica aliases are named: ``replica_1``, ``replica_2``, ..."""


@scrubbed(ConfigurationError, raise_as=ImproperlyConfigured)
def databases(
    url: str | Secret | None = None,
    *,
    direct_url: str | Secret | None = None,
    replica_urls: str | Secret | Sequence[str | Secret] | None = None,
    env: Mapping[str, str] | None = None,
    replica_var: str = REPLICA_VAR,
    replica_retry: RetryPolicy = REPLICA_RETRY,
    replica_retry_timeout: float | None = None,
    use_pooler: bool = True,
    allow_mismatched_endpoints: bool = False,
    app_vars: Sequence[str] = APP_VARS,
    direct_vars: Sequence[str] = DIRECT_VARS,
    pooled_vars: Sequence[str] = POOLED_VARS,
    **options: Any,
) -> dict[str, dict[str, Any]]:
    """``{"default": config(...), "replica_1": ..., ...}``; just ``default`` without replicas.

    ``options`` are :func:`neon_django.config`'s other keyword arguments, applied to every
    alias. ``replica_retry`` bounds how long a replica's connect is retried before
    :class:`~neon_django.routers.ReplicaRouter` reads from the primary instead (2 s). The
    old names ``pooler_prepared_statements``, ``retry_timeout`` and ``replica_retry_timeout``
    still work, with a ``DeprecationWarning``.
    """
    renamed = renamed_options(
        pooler_prepared_statements=options.pop("pooler_prepared_statements", None),
        retry_timeout=options.pop("retry_timeout", None),
        replica_retry_timeout=replica_retry_timeout,
    )
    given = [*options, *(["replica_retry"] if replica_retry is not REPLICA_RETRY else [])]
    refuse_both(renamed, given)
    replica_retry = renamed.pop("replica_retry", replica_retry)
    if not isinstance(replica_retry, RetryPolicy):
        raise ConfigurationError(
            f"neon_django.databases(replica_retry={replica_retry!r}): use a "
            "neon_connect.RetryPolicy, e.g. RetryPolicy(timeout=2)."
        )
    options.update(renamed)
    where: dict[str, Any] = {
        "use_pooler": use_pooler,
        "allow_mismatched_endpoints": allow_mismatched_endpoints,
        "app_vars": app_vars,
        "direct_vars": direct_vars,
        "pooled_vars": pooled_vars,
    }
    # One resolution each, carried as objects to the driver: no URL is rebuilt (nor its
    # password revealed) on the way.
    primary = resolve(url, direct_url=direct_url, env=env, **where)
    environ = os.environ if env is None else env
    replicas = resolve_replica_pairs(replica_urls, primary=primary, env=env, var=replica_var)
    del url, direct_url, replica_urls, env  # error pages print locals
    result = {
        "default": settings_for(
            primary,
            environ=environ,
            allow_mismatched_endpoints=allow_mismatched_endpoints,
            **options,
        )
    }
    if options.get("conn_max_age", "auto") == "auto":
        # the primary's choice (serverless or not) holds for its replicas
        options["conn_max_age"] = auto_conn_max_age(primary.app, environ)
    test = {**(options.pop("test_options", None) or {}), "MIRROR": "default"}
    for n, pair in enumerate(replicas, start=1):
        settings = settings_for(
            pair,
            environ=environ,
            **{**options, "retry": replica_retry, "test_options": test},
        )
        settings["NEON"]["REPLICA_OF"] = "default"
        result[REPLICA_ALIAS.format(n=n)] = settings
    return result


def replica_of(db: Mapping[str, Any]) -> str | None:
    """The primary alias a ``DATABASES`` entry is a replica of, or ``None``."""
    neon = db.get("NEON") or {}
    primary = neon.get("REPLICA_OF") if isinstance(neon, Mapping) else None
    return str(primary) if primary else None
