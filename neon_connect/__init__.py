"""neon-connect core: find the pooled and direct endpoints and build driver parameters.

Framework-free: importing this package imports neither Django nor SQLAlchemy.

The names below are what users call (the README and docs document each). The code behind
them lives in private modules (``_resolve.py``, ``_params.py``, ...); only this package,
``neon_connect.errors`` and ``neon_connect.cli`` are public (``tests/core/test_public_surface.py``
holds them to that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._endpoints import Endpoint, EndpointKind, Endpoints
from ._hosts import NeonHost, parse_neon_host
from ._migration_lock import MIGRATION_LOCK_KEY
from ._params import asyncpg_params, libpq_params, libpq_version, psycopg_params
from ._probes import pooler_tracks_prepared_statements
from ._resolve import APP_VARS, DIRECT_VARS, POOLED_VARS, resolve
from ._retry import DEFAULT_RETRY, RetryPolicy, is_refused_before_forwarding, is_transient
from ._secret import Secret, SecretParams, call_without_driver_frames
from ._urls import mask_url, parse_url
from .errors import (
    ConfigurationError,
    DoublePoolingError,
    InsecureConnectionError,
    InvalidURLError,
    MissingURLError,
    NeonConnectError,
    NoDirectEndpointError,
    SessionStateError,
    UnsupportedStartupParameterError,
)

if TYPE_CHECKING:
    import psycopg

    from ._commit_outcome import CommitNotSent, CommitOutcomeUnknown, acommit, commit

__version__ = "0.1.0"

__all__ = [
    "APP_VARS",
    "CommitNotSent",
    "CommitOutcomeUnknown",
    "DEFAULT_RETRY",
    "DIRECT_VARS",
    "MIGRATION_LOCK_KEY",
    "POOLED_VARS",
    "ConfigurationError",
    "DoublePoolingError",
    "Endpoint",
    "EndpointKind",
    "Endpoints",
    "InsecureConnectionError",
    "InvalidURLError",
    "MissingURLError",
    "NeonConnectError",
    "NeonHost",
    "NoDirectEndpointError",
    "RetryPolicy",
    "Secret",
    "SecretParams",
    "SessionStateError",
    "UnsupportedStartupParameterError",
    "acommit",
    "asyncpg_params",
    "commit",
    "connect",
    "is_refused_before_forwarding",
    "is_transient",
    "libpq_params",
    "libpq_version",
    "mask_url",
    "parse_neon_host",
    "parse_url",
    "pooler_tracks_prepared_statements",
    "psycopg_params",
    "resolve",
]


def connect(
    url: str | Secret | None = None,
    *,
    direct: bool = False,
    retry: RetryPolicy = DEFAULT_RETRY,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a psycopg 3 connection to the app endpoint (or the direct one with ``direct=True``).

    The URL comes from ``url`` or the environment (see :func:`resolve`); connecting retries
    while a suspended compute wakes. Extra keyword arguments go to ``psycopg.connect``.
    """
    import psycopg

    endpoints = resolve(url)
    del url  # error pages print locals: keep only the masked values below
    endpoint = endpoints.session() if direct else endpoints.app
    params = SecretParams({**psycopg_params(endpoint), **kwargs})
    return retry.call(
        lambda: call_without_driver_frames(lambda: psycopg.connect(**params)), endpoint=endpoint
    )


def __getattr__(name: str) -> Any:
    """``CommitOutcomeUnknown``, ``CommitNotSent``, ``commit`` and ``acommit`` on first use: the
    errors subclass a psycopg error, and importing ``neon_connect`` imports no driver (a psycopg2-only project
    never loads psycopg)."""
    if name in ("CommitOutcomeUnknown", "CommitNotSent", "commit", "acommit"):
        from . import _commit_outcome

        return getattr(_commit_outcome, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
