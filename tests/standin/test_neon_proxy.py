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
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import sqlalchemy

import neon_sqlalchemy
from neon_connect._params import DIRECT_TLS_LIBPQ
from neon_local import LocalNeon, StandInError
from neon_local import processes as proc
from neon_local.configs import OWNER
from neon_local.neon_proxy import COMPUTE_UNREACHABLE, NeonProxy
from neon_local.processes import free_port, wait_dead
from neon_local.pytest_plugin import NeonLocal
from neon_local.scram import SCRAM, SCRAM_PLUS, ScramError, ServerExchange, Verifier
from neon_local.standin import StandInState, _proxy_pid
from tests.constants import SECRET
from tests.helpers import run_python

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


# -- the stand-in's own proxy: `neon-local up` starts it, and its URLs go through it ----------


def _up(tmp_path: Path, **options: object) -> tuple[LocalNeon, StandInState]:
    os.chmod(tmp_path, 0o755)
    local = LocalNeon(tmp_path / "state", pool_size=2, max_connections=20, **options)  # type: ignore[arg-type]
    return local, local.up()


def test_up_exports_console_urls_through_its_proxy_and_down_stops_it(tmp_path):
    local, state = _up(tmp_path)
    try:
        proxy = _proxy_pid(state)
        assert state.proxied and local.status()["proxy"] and proc.alive(proxy)
        for url, port in (
            (state.pooled_url, state.proxy_pooled_port),
            (state.direct_url, state.proxy_direct_port),
        ):
            assert f":{port}/" in url and url.endswith("sslmode=require&channel_binding=require")
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (OWNER,)
        # the pooled URL reaches PgBouncer behind the proxy, the direct one does not
        with psycopg.connect(state.admin_url, autocommit=True) as admin:
            assert admin.execute("SHOW VERSION").fetchone()
        if psycopg.pq.version() >= DIRECT_TLS_LIBPQ:
            with psycopg.connect(state.pooled_url, sslnegotiation="direct") as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        # the bypass URLs are PgBouncer and PostgreSQL themselves: no channel binding there
        with pytest.raises(psycopg.OperationalError, match=NO_BINDING):
            psycopg.connect(state.pgbouncer_url + "&channel_binding=require")
        with psycopg.connect(state.postgres_url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with psycopg.connect(state.direct_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
        os.kill(proxy, signal.SIGKILL)  # a killed proxy: the stand-in is not running
        assert wait_dead(proxy, 10) and not local.status()["running"]
        assert _proxy_pid(state) is None  # its pid file names no proxy now
        again = local.up()  # starts the proxy alone: same URLs, same data
        assert again == state and local.status()["running"]
        with psycopg.connect(again.direct_url) as conn:
            assert conn.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)
        proxy = _proxy_pid(again)
        assert proxy is not None
    finally:
        assert local.down()
    assert wait_dead(proxy, 10)


def test_control_without_the_proxy_a_console_url_fails_on_the_stand_in(tmp_path):
    local, state = _up(tmp_path, proxy=False)
    try:
        assert not state.proxied and state.pooled_url == state.pgbouncer_url
        assert "channel_binding" not in state.pooled_url
        assert local.status()["running"] and not local.status()["proxy"]
        with pytest.raises(psycopg.OperationalError, match=NO_BINDING):
            psycopg.connect(state.pooled_url + "&channel_binding=require")
    finally:
        local.down()


def test_the_proxy_says_what_neons_says_for_no_tls_and_a_stopped_server(neon_local, proxy):
    """Through the proxy, a client without TLS, or one whose server is down, reads Neon's
    words (which neon-connect's retry knows), not a bare closed connection."""
    state = neon_local.state
    plain = _url(neon_local, proxy.port).replace("sslmode=require", "sslmode=disable")
    with pytest.raises(psycopg.OperationalError, match="connection is insecure"):
        psycopg.connect(plain.replace("&channel_binding=require", ""))
    with (
        NeonProxy(upstream_port=free_port(), runtime_dir=state.runtime_dir) as nowhere,
        pytest.raises(psycopg.OperationalError, match=COMPUTE_UNREACHABLE),
    ):
        psycopg.connect(_url(neon_local, nowhere.port).replace("=require", "=prefer"))


@pytest.mark.parametrize(
    ("args", "env", "proxied"),
    [((), {}, True), (("--no-proxy",), {}, False), ((), {"NEON_LOCAL_PROXY": "off"}, False)],
)
def test_the_cli_switch_and_the_variable_bypass_the_proxy(tmp_path, args, env, proxied):
    os.chmod(tmp_path, 0o755)
    folder = str(tmp_path / "cli")
    up = run_python("-m", "neon_local", "up", "--dir", folder, *args, env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert ("channel_binding=require" in up.stdout) is proxied
        assert ("through a Neon-like proxy" in up.stderr) is proxied
    finally:
        run_python("-m", "neon_local", "down", "--dir", folder)


def test_a_wrong_proxy_switch_is_named(tmp_path):
    up = run_python(
        "-m", "neon_local", "up", "--dir", str(tmp_path / "x"), env={"NEON_LOCAL_PROXY": "maybe"}
    )
    assert up.returncode != 0 and "NEON_LOCAL_PROXY='maybe'" in up.stderr
    assert "'off'" in up.stderr and "Traceback" not in up.stderr


def test_a_proxy_port_taken_fails_up_at_once_and_names_it(tmp_path, monkeypatch):
    """The daemon binds its ports before it detaches, so ``up`` learns of a taken port from
    its exit status instead of waiting out the start timeout."""
    import socket
    import time

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(proc, "port_free", lambda wanted: True)  # taken after the check
        started = time.monotonic()
        with pytest.raises(StandInError, match=rf"proxy did not start on ports {port}.*in use"):
            LocalNeon(
                tmp_path / "state", pool_size=2, max_connections=20, proxy_ports=(port, 0)
            ).up()
        assert time.monotonic() - started < 15  # PostgreSQL's start, not a 30 s wait
    assert not (tmp_path / "state").exists()  # the rest was stopped and removed


def test_down_never_stops_another_stand_ins_proxy(tmp_path):
    """A pid file naming a live proxy of another stand-in (a stale file, the pid reused) is
    not trusted: that proxy keeps running."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, first_state = _up(tmp_path / "a")
    second, second_state = _up(tmp_path / "b")
    try:
        theirs = _proxy_pid(first_state)
        assert theirs is not None
        second.down()
        Path(second_state.directory).mkdir(parents=True)
        (Path(second_state.directory) / "proxy.pid").write_text(f"{theirs}\n")
        assert _proxy_pid(second_state) is None
        assert proc.alive(theirs) and first.status()["running"]
    finally:
        first.down()
        second.down()


def test_up_says_when_the_switch_cannot_change_a_running_stand_in(tmp_path):
    os.chmod(tmp_path, 0o755)
    folder = str(tmp_path / "cli")
    try:
        assert run_python("-m", "neon_local", "up", "--dir", folder).returncode == 0
        again = run_python("-m", "neon_local", "up", "--dir", folder, "--no-proxy")
        assert again.returncode == 0 and "channel_binding=require" in again.stdout
        assert "has Neon-like proxy" in again.stderr and "neon-local down" in again.stderr
    finally:
        run_python("-m", "neon_local", "down", "--dir", folder)


@pytest.mark.parametrize("limit", [0.3, None], ids=["limit", "control-no-limit"])
def test_a_client_silent_during_its_login_is_closed(neon_local, limit):
    """A client that connects and sends nothing, or stops mid-login, is closed after the
    handshake limit, as PgBouncer's ``client_login_timeout`` does; without one (the control),
    it held a thread and a descriptor for as long as it stayed."""
    import socket
    import time

    state = neon_local.state
    with NeonProxy(
        upstream_port=state.pooler_port,
        runtime_dir=state.runtime_dir,
        passwords={OWNER: state.password},
        handshake_timeout=limit,  # None: the control
    ) as made:
        with socket.create_connection(("127.0.0.1", made.port)) as silent:
            silent.settimeout(2.0)
            started = time.monotonic()
            try:
                closed = silent.recv(1) == b""
            except TimeoutError:
                closed = False  # still open after 2 s
            waited = time.monotonic() - started
        with psycopg.connect(_url(neon_local, made.port)) as conn:  # others still log in
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert closed is (limit is not None), waited
