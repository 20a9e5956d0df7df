"""Turn an :class:`~neon_connect.Endpoint` into keyword arguments for a driver.

The rules are Neon's: TLS is required, old libpq needs the endpoint id in ``options``
(no SNI before libpq 14), ``channel_binding`` needs libpq 13 and is unknown to asyncpg,
and a transaction pooler accepts no startup ``options``.
"""

from __future__ import annotations

import functools
import os
import shlex
import socket
import ssl
from typing import Any, Literal

from ._endpoints import Endpoint
from ._rules import WEAK_SSLMODES, refuse, startup_options, tls_mode
from ._secret import SecretParams
from .errors import ConfigurationError, InsecureConnectionError, UnsupportedStartupParameterError

DEFAULT_CONNECT_TIMEOUT = 10
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
"""TCP keepalives: a kept connection whose peer vanished without a goodbye (a half-open
connection, which no check on the socket can see) fails within 30 + 3 x 10 s of silence,
instead of the kernel's two hours."""
TCP_USER_TIMEOUT_MS = "60000"
"""libpq >= 12: data sent into a peer that vanished fails after 60 s, not ~15 minutes."""
_SOCKET_KEEPALIVES = (
    ("keepalives_idle", "TCP_KEEPIDLE"),
    ("keepalives_interval", "TCP_KEEPINTVL"),
    ("keepalives_count", "TCP_KEEPCNT"),
    ("tcp_user_timeout", "TCP_USER_TIMEOUT"),
)


def socket_keepalives(endpoint: Endpoint) -> list[tuple[int, int, int]]:
    """``setsockopt`` triples giving a driver without libpq (asyncpg, which has no such
    setting) the keepalives and ``tcp_user_timeout`` libpq gets from :func:`libpq_params`:
    the URL's own values win, ``keepalives=0`` turns them off. Options this platform lacks
    are left out."""
    params = endpoint.params
    if endpoint.host.startswith("/") or int(params.get("keepalives", "1")) == 0:
        return []  # a Unix socket has no TCP (libpq ignores them there too), or turned off
    defaults = {**KEEPALIVES, "tcp_user_timeout": TCP_USER_TIMEOUT_MS}
    triples = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for key, name in _SOCKET_KEEPALIVES:
        # macOS names the idle time TCP_KEEPALIVE, as libpq knows
        option = getattr(socket, name, None) or (
            getattr(socket, "TCP_KEEPALIVE", None) if name == "TCP_KEEPIDLE" else None
        )
        value = int(params.get(key, defaults[key]))  # resolve() checked it is a whole number
        if option is not None and value > 0:  # 0: the system's default, as in libpq
            triples.append((socket.IPPROTO_TCP, option, value))
    return triples


CONNECTION_KEYS = frozenset({"host", "port", "user", "password", "dbname", "database"})
_NEON_OPTION_KEYS = ("endpoint", "project")  # read by Neon's proxy, never reach PgBouncer
# libpq settings that only shape the client side; asyncpg has no use for them.
_LIBPQ_ONLY = frozenset(
    {
        "channel_binding",
        "gssencmode",
        "gsslib",
        "keepalives",
        "keepalives_count",
        "keepalives_idle",
        "keepalives_interval",
        "krbsrvname",
        "load_balance_hosts",
        "requirepeer",
        "require_auth",
        "sslcompression",
        "sslcrl",
        "sslcrldir",
        "sslnegotiation",
        "sslpassword",
        "sslsni",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "tcp_user_timeout",
        "fallback_application_name",
        "service",
        "gssdelegation",
        "min_protocol_version",
        "max_protocol_version",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_issuer",
        "oauth_scope",
        "scram_client_key",
        "scram_server_key",
        "sslcertmode",
        "sslkeylogfile",
    }
)
_ASYNCPG_UNSUPPORTED = ("hostaddr", "replication")
"""libpq keywords that change where or how asyncpg connects, which it cannot honour."""


DIRECT_TLS_LIBPQ = 170000
"""libpq 17 added ``sslnegotiation=direct``: TLS from the first byte, without the
``SSLRequest`` round trip. Neon's proxy accepts it on both endpoints."""


def libpq_version(*, driver: Literal["psycopg", "psycopg2"] = "psycopg") -> int:
    """The libpq version ``driver`` uses (``170002`` for 17.2), or psycopg2's when psycopg
    cannot be imported, or 0. The two drivers bundle libpqs of their own."""
    if driver == "psycopg":
        try:
            import psycopg

            return int(psycopg.pq.version())
        except ImportError:  # pragma: no cover - psycopg is a dependency
            pass
    try:  # pragma: no cover - psycopg2 is optional
        import psycopg2.extensions  # type: ignore[import-untyped]

        return int(psycopg2.extensions.libpq_version())
    except ImportError:  # pragma: no cover
        return 0


def libpq_params(
    endpoint: Endpoint,
    *,
    client_version: int | None = None,
    connect_timeout: int | None = DEFAULT_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """libpq keyword arguments (for psycopg 3 or psycopg2) for ``endpoint``.

    ``client_version`` is the libpq version to write them for (default: :func:`libpq_version`).

    Raises :class:`~neon_connect.InsecureConnectionError` for ``sslmode`` weaker than
    ``require`` on a Neon host, and :class:`~neon_connect.UnsupportedStartupParameterError`
    for startup ``options`` on an endpoint behind a transaction pooler.
    """
    version = libpq_version() if client_version is None else client_version
    params = dict(endpoint.params)
    _apply_tls_rules(endpoint, params)
    if version >= DIRECT_TLS_LIBPQ and _direct_tls(endpoint, params):
        params["sslnegotiation"] = "direct"
    elif version < DIRECT_TLS_LIBPQ and "sslnegotiation" in params:
        params.pop("sslnegotiation")  # libpq < 17 rejects the keyword outright
    neon_options, startup_options = _split_options(params.pop("options", ""))
    _refuse_startup_options(endpoint, startup_options)
    if "channel_binding" in params and version < 130000:
        params.pop("channel_binding")  # libpq < 13 rejects the keyword outright
    if (
        endpoint.is_neon
        and version < 140000
        and not any(opt.startswith("endpoint=") for opt in neon_options)
    ):
        neon_options.append(f"endpoint={endpoint.endpoint_id}")  # no SNI before libpq 14
    options = " ".join([*neon_options, *startup_options])
    if options:
        params["options"] = options
    if connect_timeout is not None:
        params.setdefault("connect_timeout", str(connect_timeout))
    for key, value in KEEPALIVES.items():  # the user's own values win
        params.setdefault(key, value)
    if version >= 120000:
        params.setdefault("tcp_user_timeout", TCP_USER_TIMEOUT_MS)
    return SecretParams(
        {
            "host": endpoint.host,
            "port": endpoint.port,
            **({"user": endpoint.user} if endpoint.user else {}),
            **({"password": endpoint.password} if endpoint.password else {}),
            **({"dbname": endpoint.database} if endpoint.database else {}),
            **params,
        }
    )


def psycopg_params(
    endpoint: Endpoint,
    *,
    client_version: int | None = None,
    connect_timeout: int | None = DEFAULT_CONNECT_TIMEOUT,
    prepared_statements: bool = False,
) -> dict[str, Any]:
    """:func:`libpq_params` plus psycopg 3's own: automatic prepares off behind a pooler.

    ``prepared_statements=True`` declares that the pooler tracks protocol-level prepared
    statements (PgBouncer >= 1.22 with ``max_prepared_statements``, as Neon's does).
    """
    params = libpq_params(endpoint, client_version=client_version, connect_timeout=connect_timeout)
    if endpoint.transaction_pooler and not prepared_statements:
        params["prepare_threshold"] = None
    return params


def asyncpg_params(
    endpoint: Endpoint,
    *,
    connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    prepared_statements: bool = False,
) -> dict[str, Any]:
    """``asyncpg.connect()`` keyword arguments for ``endpoint``.

    ``sslmode`` becomes ``ssl``; ``channel_binding`` and other libpq-only settings are
    dropped (asyncpg would raise ``TypeError``); ``-c`` options become ``server_settings``.
    Behind a transaction pooler the statement cache is off, unless ``prepared_statements=True``
    declares that the pooler tracks prepared statements (as for :func:`psycopg_params`).
    """
    params = dict(endpoint.params)
    unsupported = [key for key in _ASYNCPG_UNSUPPORTED if key in params]
    if unsupported:
        raise ConfigurationError(
            f"{', '.join(unsupported)} ({endpoint.origin}) is a libpq setting asyncpg "
            "cannot honour: remove it, or use the psycopg driver."
        )
    _apply_tls_rules(endpoint, params)
    direct_tls = _direct_tls(endpoint, params) and _asyncpg_direct_tls()
    _neon_options, startup_options = _split_options(params.pop("options", ""))
    _refuse_startup_options(endpoint, startup_options)
    server_settings = _settings_from_options(startup_options)
    kwargs: dict[str, Any] = SecretParams(
        {
            "host": endpoint.host or None,
            "port": endpoint.port,
            "user": endpoint.user,
            "password": endpoint.password,
            "database": endpoint.database,
            "ssl": _asyncpg_ssl(params),
        }
    )
    timeout = params.pop("connect_timeout", None)
    if timeout is not None:
        kwargs["timeout"] = float(timeout)
    elif connect_timeout is not None:
        kwargs["timeout"] = float(connect_timeout)
    if "application_name" in params:
        server_settings["application_name"] = params.pop("application_name")
    if "target_session_attrs" in params:
        kwargs["target_session_attrs"] = params.pop("target_session_attrs")
    if "passfile" in params:
        kwargs["passfile"] = params.pop("passfile")
    for key in [k for k in params if k in _LIBPQ_ONLY]:
        params.pop(key)
    if params:
        if endpoint.transaction_pooler:
            raise UnsupportedStartupParameterError(
                f"The connection parameter(s) {', '.join(sorted(params))} would be sent to the "
                f"pooled endpoint {endpoint.display_host} as startup parameters, which a "
                "transaction pooler rejects. Remove them, or use the direct endpoint."
            )
        server_settings.update(params)
    if server_settings:
        kwargs["server_settings"] = server_settings
    if endpoint.transaction_pooler and not prepared_statements:
        kwargs["statement_cache_size"] = 0
    if direct_tls:
        kwargs["direct_tls"] = True
    return kwargs


def connection_options(params: dict[str, Any]) -> dict[str, Any]:
    """Driver parameters minus where to connect and as whom (for ``OPTIONS``/``connect_args``)."""
    return SecretParams({k: v for k, v in params.items() if k not in CONNECTION_KEYS})


def _apply_tls_rules(endpoint: Endpoint, params: dict[str, str]) -> None:
    if not endpoint.is_neon:
        return
    if not params.get("sslmode"):
        params["sslmode"] = "require"
    refuse(
        tls_mode(params["sslmode"], neon_host=endpoint.host, where=endpoint.origin),
        InsecureConnectionError,
    )


def _direct_tls(endpoint: Endpoint, params: dict[str, str]) -> bool:
    """Whether to open TLS directly: the user's ``sslnegotiation`` decides, in the URL or in
    libpq's own ``PGSSLNEGOTIATION`` (a keyword set here would override that variable); else
    on Neon's hosts, whose proxy accepts it (TLS is required there, as libpq demands for it)."""
    chosen = params.get("sslnegotiation") or os.environ.get("PGSSLNEGOTIATION") or None
    if chosen is not None:
        return chosen.lower() == "direct"
    return endpoint.is_neon and params.get("sslmode", "").lower() in _STRICT_SSLMODES


_STRICT_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})


@functools.cache
def _asyncpg_direct_tls() -> bool:
    """asyncpg >= 0.32: it offers ALPN ``postgresql`` on the TLS contexts it makes (and
    :func:`_asyncpg_ssl` on the ones made here). Older releases take ``direct_tls`` but offer
    no ALPN, which PostgreSQL 17 refuses for direct TLS: they ask with ``SSLRequest``."""
    try:
        import asyncpg
    except ImportError:
        return False
    major, minor = (int(part) for part in asyncpg.__version__.split(".")[:2])
    return (major, minor) >= (0, 32)


def _split_options(options: str) -> tuple[list[str], list[str]]:
    """Split libpq ``options`` into Neon proxy options and real startup options."""
    try:
        tokens = shlex.split(options)
    except ValueError:
        tokens = options.split()
    neon: list[str] = []
    startup: list[str] = []
    for token in tokens:
        (neon if token.split("=", 1)[0] in _NEON_OPTION_KEYS else startup).append(token)
    return neon, startup


def describe_startup_options(options: str) -> str | None:
    """The session settings in libpq ``options`` (``-c search_path``), leaving out what
    Neon's proxy reads (``endpoint=``); ``None`` when there are none."""
    _neon, startup = _split_options(options)
    return _describe(startup) if startup else None


def _refuse_startup_options(endpoint: Endpoint, startup: list[str]) -> None:
    if not (startup and endpoint.transaction_pooler):
        return
    refuse(
        startup_options(_describe(startup), host=endpoint.display_host, where=endpoint.origin),
        UnsupportedStartupParameterError,
    )


def _describe(tokens: list[str]) -> str:
    names = list(_settings_from_options(tokens))
    return ", ".join(f"-c {name}" for name in names) if names else "custom options"


def _settings_from_options(tokens: list[str]) -> dict[str, str]:
    """``-c name=value`` / ``--name=value`` tokens as a settings dict."""
    settings: dict[str, str] = {}
    it = iter(tokens)
    for token in it:
        if token == "-c":
            token = next(it, "")
        elif token.startswith(("-c", "--")):
            token = token[2:]
        key, sep, value = token.partition("=")
        if sep:
            settings[key.replace("-", "_")] = value
    return settings


def _asyncpg_ssl(params: dict[str, str]) -> Any:
    mode = params.pop("sslmode", "prefer").lower()
    rootcert = params.pop("sslrootcert", None)
    cert = params.pop("sslcert", None)
    key = params.pop("sslkey", None)
    if not (rootcert or cert) or mode in WEAK_SSLMODES:
        return mode
    # asyncpg reads no certificate paths from keyword arguments: build the context here.
    if rootcert == "system":
        context = ssl.create_default_context()
        mode = "verify-full"
    else:
        context = (
            ssl.create_default_context(cafile=rootcert)
            if rootcert
            else ssl.create_default_context()
        )
    context.set_alpn_protocols(["postgresql"])  # asyncpg leaves a given context as it is
    if cert:
        context.load_cert_chain(cert, key)
    if mode == "require" and not rootcert:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode in ("require", "verify-ca"):
        context.check_hostname = False  # libpq: require + a root cert means verify-ca
    return context
