"""neon-connect core: find the pooled and direct endpoints and build driver parameters.

Framework-free: importing this package imports neither Django nor SQLAlchemy.

The names below are what users call (the README documents each). The adapters also use
building blocks from the core's modules (``params``, ``secret``, ``limits``, ``check``), only
names listed in each module's ``__all__`` (``tests/core/test_public_surface.py`` holds them
to that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .endpoints import Endpoint, EndpointKind, Endpoints
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
from .hosts import NeonHost, parse_neon_host
from .params import asyncpg_params, libpq_params, libpq_version, psycopg_params
from .resolve import APP_VARS, DIRECT_VARS, POOLED_VARS, resolve
from .retry import DEFAULT_RETRY, RetryPolicy, is_refused_before_forwarding, is_transient
from .secret import Secret, SecretParams, call_without_driver_frames
from .urls import mask_url, parse_url

if TYPE_CHECKING:
    import psycopg

    from .commit_outcome import CommitOutcomeUnknown

__version__ = "0.1.0"

__all__ = [
    "APP_VARS",
    "CommitOutcomeUnknown",
    "DEFAULT_RETRY",
    "DIRECT_VARS",
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
    "asyncpg_params",
    "connect",
    "is_refused_before_forwarding",
    "is_transient",
    "libpq_params",
    "libpq_version",
    "mask_url",
    "parse_neon_host",
    "parse_url",
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
    """``CommitOutcomeUnknown`` on first use: it subclasses a psycopg error, and importing
    ``neon_connect`` imports no driver (a psycopg2-only project never loads psycopg)."""
    if name == "CommitOutcomeUnknown":
        from .commit_outcome import CommitOutcomeUnknown

        return CommitOutcomeUnknown
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
