from __future__ import annotations

import ssl

import pytest

from neon_connect import (
    ConfigurationError,
    InsecureConnectionError,
    InvalidURLError,
    UnsupportedStartupParameterError,
    asyncpg_params,
    libpq_params,
    psycopg_params,
    resolve,
)
from neon_connect._urls import libpq_keywords
from tests.constants import SECRET

CA_FILE = __file__  # any existing file: only its existence is checked before connecting

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
DIRECT = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"


def endpoint(host: str, query: str = "", **kw):
    endpoints = resolve(f"postgresql://neondb_owner:{SECRET}@{host}/neondb{query}", **kw)
    return endpoints.app if "-pooler" in host or not endpoints.is_neon else endpoints.session()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "require"),
        ("?sslmode=require", "require"),
        ("?sslmode=verify-full&sslrootcert=system", "verify-full"),
        (f"?sslmode=verify-ca&sslrootcert={CA_FILE}", "verify-ca"),
    ],
)
def test_neon_tls_defaults_and_pass_through(query, expected):
    params = libpq_params(endpoint(POOLED, query), client_version=170000)
    assert params["sslmode"] == expected
    if "sslrootcert" in query:
        assert params["sslrootcert"] in ("system", CA_FILE)


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
def test_weak_sslmode_on_neon_is_refused(mode):
    ep = endpoint(POOLED, f"?sslmode={mode}")
    for build in (libpq_params, asyncpg_params):
        with pytest.raises(
            InsecureConnectionError, match=f"sslmode={mode}.*Neon requires TLS"
        ) as info:
            build(ep)
        assert SECRET not in str(info.value)


def test_non_neon_hosts_keep_what_the_user_set():
    params = libpq_params(endpoint("127.0.0.1", "?sslmode=disable"), client_version=170000)
    assert params["sslmode"] == "disable"
    assert "sslmode" not in libpq_params(endpoint("127.0.0.1"), client_version=170000)


@pytest.mark.parametrize(("version", "kept"), [(120000, False), (130000, True), (170002, True)])
def test_channel_binding_needs_libpq_13(version, kept):
    params = libpq_params(
        endpoint(POOLED, "?sslmode=require&channel_binding=require"), client_version=version
    )
    assert ("channel_binding" in params) is kept


@pytest.mark.parametrize(
    ("host", "version", "options"),
    [
        (DIRECT, 130000, "endpoint=ep-cool-darkness-123456"),
        (POOLED, 130000, "endpoint=ep-cool-darkness-123456"),  # the id never carries -pooler
        (DIRECT, 140000, None),
        (POOLED, 170002, None),
        ("127.0.0.1", 120000, None),  # never added for a non-Neon host
    ],
)
def test_sni_fallback(host, version, options):
    assert libpq_params(endpoint(host), client_version=version).get("options") == options


def test_sni_fallback_joins_direct_startup_options():
    params = libpq_params(
        endpoint(DIRECT, "?options=-c%20search_path%3Dapp"), client_version=130000
    )
    assert params["options"] == "endpoint=ep-cool-darkness-123456 -c search_path=app"


@pytest.mark.parametrize(
    "query",
    [
        "?options=-c%20search_path%3Dapp",
        "?options=-csearch_path%3Dapp",
        "?options=--statement_timeout%3D5s",
    ],
)
def test_startup_options_on_a_pooler_are_refused(query):
    for host in (POOLED, "pooler.internal"):
        env = {
            "DATABASE_URL": f"postgresql://u:{SECRET}@{host}:6432/db{query}",
            "DATABASE_URL_UNPOOLED": f"postgresql://u@{DIRECT if host == POOLED else 'pg'}/db",
        }
        ep = resolve(env=env).app
        with pytest.raises(UnsupportedStartupParameterError) as info:
            libpq_params(ep, client_version=170000)
        message = str(info.value)
        assert "'options'" in message and "direct endpoint" in message and "SET LOCAL" in message
        assert SECRET not in message


def test_neon_endpoint_option_is_allowed_on_the_pooler():
    params = libpq_params(
        endpoint(POOLED, "?options=endpoint%3Dep-cool-darkness-123456"), client_version=130000
    )
    assert params["options"] == "endpoint=ep-cool-darkness-123456"


def test_timeout_and_application_name():
    params = libpq_params(endpoint(POOLED, "?application_name=web"), client_version=170000)
    assert (params["connect_timeout"], params["application_name"]) == ("10", "web")
    assert (
        libpq_params(endpoint(POOLED, "?connect_timeout=30"), client_version=170000)[
            "connect_timeout"
        ]
        == "30"
    )
    assert "connect_timeout" not in libpq_params(
        endpoint(POOLED), client_version=170000, connect_timeout=None
    )


def test_psycopg_turns_prepares_off_only_behind_a_pooler():
    assert psycopg_params(endpoint(POOLED))["prepare_threshold"] is None
    assert "prepare_threshold" not in psycopg_params(endpoint(DIRECT))
    assert "prepare_threshold" not in psycopg_params(endpoint(POOLED), prepared_statements=True)


def test_asyncpg_translates_a_neon_console_url():
    kwargs = asyncpg_params(endpoint(POOLED, "?sslmode=require&channel_binding=require"))
    assert kwargs["ssl"] == "require"
    assert "channel_binding" not in kwargs and "sslmode" not in kwargs
    assert kwargs["timeout"] == 10.0
    assert kwargs["statement_cache_size"] == 0
    assert (kwargs["user"], kwargs["database"], kwargs["password"]) == (
        "neondb_owner",
        "neondb",
        SECRET,
    )


def test_asyncpg_settings_and_certificates():
    direct = asyncpg_params(
        endpoint(DIRECT, "?options=-c%20search_path%3Dapp&application_name=w&keepalives=1")
    )
    assert direct["server_settings"] == {"search_path": "app", "application_name": "w"}
    assert "statement_cache_size" not in direct
    ctx = asyncpg_params(endpoint(DIRECT, "?sslmode=verify-full&sslrootcert=system"))["ssl"]
    assert (
        isinstance(ctx, ssl.SSLContext)
        and ctx.check_hostname
        and ctx.verify_mode == ssl.CERT_REQUIRED
    )
    with pytest.raises(InvalidURLError, match="'search_path', which libpq does not know"):
        endpoint(POOLED, "?search_path=app")  # refused when configured, not at connect


def test_asyncpg_refuses_what_it_cannot_honour_and_drops_client_only_keys():
    with pytest.raises(ConfigurationError, match="hostaddr .*asyncpg cannot honour"):
        asyncpg_params(endpoint(DIRECT, "?hostaddr=127.0.0.1"))
    # libpq-only client settings, as many as the installed libpq knows (16 added sslcertmode
    # and load_balance_hosts, 18 min_protocol_version); unknown keys are refused earlier
    client_only = {"sslcertmode": "allow", "load_balance_hosts": "disable",
                   "min_protocol_version": "3.0"}  # fmt: skip
    known = "&".join(f"{k}={v}" for k, v in client_only.items() if k in libpq_keywords())
    assert known, "libpq knows none of them"
    kwargs = asyncpg_params(endpoint(DIRECT, "?" + known))
    assert "server_settings" not in kwargs  # client-side settings never reach the server


def test_socket_keepalives_for_drivers_without_libpq():
    """asyncpg has no keepalive setting: the engine sets these on its socket (issue 21)."""
    import socket

    from neon_connect._params import socket_keepalives

    options = {
        (level, option): value for level, option, value in socket_keepalives(endpoint(POOLED))
    }
    assert options[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] == 1
    assert options[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 30
    assert options[(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)] == 60000
    own = socket_keepalives(endpoint(POOLED, "?keepalives_idle=7&keepalives_count=0"))
    assert (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7) in own
    assert not [t for t in own if t[1] == socket.TCP_KEEPCNT]  # 0: the system's default
    assert socket_keepalives(endpoint(POOLED, "?keepalives=00")) == []  # off, as libpq reads it
    # a Unix socket has no TCP: setting them there fails (libpq ignores them)
    unix = resolve(f"postgresql://u:{SECRET}@%2Fvar%2Frun%2Fpostgresql/db").app
    assert socket_keepalives(unix) == []
