"""Channel binding through the stand-in's Neon-like proxy (issue 24).

Neon's console URLs ask for ``channel_binding=require``: Neon's proxy ends the SCRAM exchange
itself and offers ``SCRAM-SHA-256-PLUS`` on both endpoints. The stand-in's PgBouncer offers no
channel binding, so such a URL failed against it; through :class:`neon_local.neon_proxy.
NeonProxy` it connects, on the pooled endpoint and the direct one, with every driver.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy

import neon_sqlalchemy
from neon_connect._params import DIRECT_TLS_LIBPQ
from neon_local.configs import OWNER
from neon_local.neon_proxy import NeonProxy
from neon_local.pytest_plugin import NeonLocal
from neon_local.scram import SCRAM, SCRAM_PLUS, ScramError, ServerExchange, Verifier
from tests.constants import SECRET

pytestmark = pytest.mark.integration

NEON_HOST = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
NO_BINDING = "server did not offer an authentication method that supports channel binding"


@pytest.fixture(params=["pooled", "direct"])
def proxy(request, neon_local: NeonLocal) -> Iterator[NeonProxy]:
    state = neon_local.state
    port = state.pooler_port if request.param == "pooled" else state.pg_port
    with NeonProxy(
        upstream_port=port, runtime_dir=state.runtime_dir, passwords={OWNER: state.password}
    ) as made:
        yield made


def _url(neon_local: NeonLocal, port: int, *, password: str | None = None, query: str = "") -> str:
    secret = quote(neon_local.state.password if password is None else password, safe="")
    return (
        f"postgresql://{OWNER}:{secret}@127.0.0.1:{port}/neondb"
        f"?sslmode=require&channel_binding=require{query}"
    )


def test_a_console_url_with_channel_binding_connects_through_the_proxy(neon_local, proxy):
    with psycopg.connect(_url(neon_local, proxy.port)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (OWNER,)
        assert conn.pgconn.used_password
    assert proxy.mechanisms == ["SCRAM-SHA-256-PLUS"]


def test_control_the_pooler_alone_offers_no_channel_binding(neon_local):
    with pytest.raises(psycopg.OperationalError, match=NO_BINDING):
        psycopg.connect(_url(neon_local, neon_local.state.pooler_port))


def test_a_wrong_password_is_refused_without_showing_it(neon_local, proxy):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed") as info:
        psycopg.connect(_url(neon_local, proxy.port, password=SECRET))
    assert SECRET not in str(info.value) and neon_local.state.password not in str(info.value)
    assert proxy.mechanisms == []


def test_a_client_that_cannot_bind_still_logs_in_without_it(neon_local, proxy):
    url = _url(neon_local, proxy.port).replace("channel_binding=require", "channel_binding=disable")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert proxy.mechanisms == ["SCRAM-SHA-256"]


def test_other_users_log_in_with_the_server_itself(neon_local):
    """A user the proxy holds no password for: the server's own SCRAM, passed through."""
    state = neon_local.state
    with NeonProxy(upstream_port=state.pooler_port, runtime_dir=state.runtime_dir) as bare:
        url = _url(neon_local, bare.port).replace(
            "channel_binding=require", "channel_binding=prefer"
        )
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError, match=NO_BINDING):
            psycopg.connect(_url(neon_local, bare.port))
        assert bare.mechanisms == []


def test_direct_tls_and_channel_binding_together_as_on_a_neon_host(neon_local, proxy):
    """On a Neon host name, neon-connect asks for direct TLS where libpq can (17 or newer; the
    ``lowest`` session's libpq 16 shows the ``SSLRequest`` fallback); the console URL asks
    for channel binding."""
    url = (
        f"postgresql://{OWNER}:{quote(neon_local.state.password, safe='')}@{NEON_HOST}:"
        f"{proxy.port}/neondb?sslmode=require&channel_binding=require&hostaddr=127.0.0.1"
    )
    engine = neon_sqlalchemy.create_engine(url, allow_mismatched_endpoints=True, direct=False)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    way = "direct" if psycopg.pq.version() >= DIRECT_TLS_LIBPQ else "sslrequest"
    assert proxy.negotiations[-1].startswith(way)
    assert proxy.mechanisms[-1] == "SCRAM-SHA-256-PLUS"


def test_asyncpg_takes_the_plain_mechanism_from_a_console_url(neon_local, proxy):
    """asyncpg has no channel binding; neon-connect drops the libpq-only setting for it."""

    async def run() -> int:
        engine = neon_sqlalchemy.create_async_engine(
            _url(neon_local, proxy.port), driver="asyncpg", allow_mismatched_endpoints=True
        )
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(sqlalchemy.text("SELECT 1"))).scalar_one())
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == 1
    assert proxy.mechanisms == ["SCRAM-SHA-256"]


def _client_messages(password: str, header: str, binding: bytes, server: ServerExchange) -> str:
    """A client's exchange written by hand, binding ``binding`` under ``header``."""
    bare = "n=,r=clientnonce"
    server_first = server.first(f"{header}{bare}")
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), 4096)
    without_proof = f"c={base64.b64encode(header.encode() + binding).decode()},r={fields['r']}"
    auth = f"{bare},{server_first},{without_proof}".encode()
    key = hmac.new(salted, b"Client Key", "sha256").digest()
    signature = hmac.new(hashlib.sha256(key).digest(), auth, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


def test_the_exchange_refuses_another_channel_a_downgrade_and_a_wrong_password():
    """What channel binding is for: a proof made over another TLS connection (a relay in the
    middle) does not pass, nor does a client told that binding was not offered."""
    verifier = Verifier.of(SECRET)
    ours, theirs = b"ours" * 8, b"theirs" * 5

    def exchange(mechanism: str) -> ServerExchange:
        return ServerExchange(verifier, mechanism=mechanism, binding_data=ours)

    header = "p=tls-server-end-point,,"
    server = exchange(SCRAM_PLUS)
    assert server.final(_client_messages(SECRET, header, ours, server)).startswith("v=")
    for password, binding in ((SECRET, theirs), ("not it", ours)):
        server = exchange(SCRAM_PLUS)
        with pytest.raises(ScramError):
            server.final(_client_messages(password, header, binding, server))
    with pytest.raises(ScramError, match="told it could not"):
        exchange(SCRAM).first("y,,n=,r=clientnonce")
