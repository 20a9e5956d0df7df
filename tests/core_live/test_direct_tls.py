"""Direct TLS on Neon's hosts (issue 24): with libpq >= 17 (and asyncpg's ``direct_tls``), TLS
opens from the first byte, one round trip fewer per connect than the ``SSLRequest`` exchange.

Neon's proxy accepts it; the stand-in's PgBouncer 1.24 and PostgreSQL 15 do not, so these
tests go through :class:`neon_local.neon_proxy.NeonProxy`, which ends TLS either way and
records how each client came. A Neon host name reaches it through ``hostaddr``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import psycopg
import pytest
import sqlalchemy

import neon_sqlalchemy
from neon_connect import InvalidURLError, asyncpg_params, libpq_version, psycopg_params, resolve
from neon_connect._params import DIRECT_TLS_LIBPQ
from neon_local.neon_proxy import NeonProxy
from neon_local.pytest_plugin import NeonLocal

pytestmark = pytest.mark.integration

NEON_HOST = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
DIRECT = psycopg.pq.version() >= DIRECT_TLS_LIBPQ
"""psycopg's libpq can: 17 or newer. The ``lowest`` session's psycopg 3.2.1 bundles libpq 16,
and there these tests show the fallback instead."""
EXPECTED = "direct" if DIRECT else "sslrequest"


@pytest.fixture
def front(neon_local: NeonLocal) -> Iterator[NeonProxy]:
    with NeonProxy(
        upstream_port=neon_local.state.pooler_port, runtime_dir=neon_local.state.runtime_dir
    ) as made:
        yield made


def _neon_url(neon_local: NeonLocal, front: NeonProxy, scheme: str = "postgresql") -> str:
    """A Neon console URL for the pooled endpoint, reaching the front through ``hostaddr``."""
    state = neon_local.state
    return (
        f"{scheme}://neondb_owner:{quote(state.password, safe='')}@{NEON_HOST}:{front.port}"
        "/neondb?sslmode=require&hostaddr=127.0.0.1"
    )


def _ways(front: NeonProxy) -> list[str]:
    """How each client opened TLS (libpq 18 offers ALPN either way)."""
    return [kind.partition("+")[0] for kind in front.negotiations]


def _select_one(params: dict[str, object]) -> int:
    with psycopg.connect(**params) as conn:  # type: ignore[arg-type]
        return int(conn.execute("SELECT 1").fetchone()[0])  # type: ignore[index]


def test_a_neon_host_opens_tls_directly_where_libpq_can(neon_local, front):
    params = psycopg_params(resolve(_neon_url(neon_local, front)).app)
    assert params.get("sslnegotiation") == ("direct" if DIRECT else None)
    assert _select_one(params) == 1
    assert _ways(front) == [EXPECTED]


def test_with_an_older_libpq_the_connect_asks_for_tls_first(neon_local, front):
    """libpq 16 knows no ``sslnegotiation``: the keyword is left out, not sent to fail."""
    endpoint = resolve(_neon_url(neon_local, front)).app
    assert "sslnegotiation" not in psycopg_params(endpoint, client_version=DIRECT_TLS_LIBPQ - 1)
    assert _select_one(psycopg_params(endpoint, client_version=DIRECT_TLS_LIBPQ - 1)) == 1
    assert _ways(front) == ["sslrequest"]


def test_the_users_own_sslnegotiation_wins(neon_local, front):
    url = _neon_url(neon_local, front) + "&sslnegotiation=postgres"
    if not DIRECT:  # libpq 16 does not know the keyword: the URL is refused, by name
        with pytest.raises(InvalidURLError, match="sslnegotiation"):
            resolve(url)
        return
    endpoint = resolve(url).app
    params = psycopg_params(endpoint)
    assert params["sslnegotiation"] == "postgres"
    assert _select_one(params) == 1
    assert _ways(front) == ["sslrequest"]


def test_libpqs_own_pgsslnegotiation_in_the_environment_wins(neon_local, front, monkeypatch):
    """libpq reads ``PGSSLNEGOTIATION`` only where no keyword is given: a keyword set here
    would silently override the user's choice (it did: the connect opened TLS directly)."""
    monkeypatch.setenv("PGSSLNEGOTIATION", "postgres")
    params = psycopg_params(resolve(_neon_url(neon_local, front)).app)
    assert "sslnegotiation" not in params
    assert _select_one(params) == 1
    assert _ways(front) == ["sslrequest"]


def test_control_hosts_other_than_neons_are_not_asked_and_pgbouncer_refuses_it(neon_local):
    """Only Neon's proxy is known to accept it; PgBouncer < 1.25 (the stand-in's) does not."""
    params = psycopg_params(resolve(neon_local.pooled_url).app)
    assert "sslnegotiation" not in params
    assert _select_one(params) == 1
    if DIRECT:  # (libpq 16 cannot even ask)
        with pytest.raises(psycopg.OperationalError):
            _select_one({**params, "sslnegotiation": "direct"})


def test_sqlalchemy_and_django_settings_carry_it_where_their_libpq_can(neon_local, front):
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    import neon_django

    url = _neon_url(neon_local, front, "postgresql+psycopg")
    engine = neon_sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    assert _ways(front) == [EXPECTED]
    # Django's driver may be psycopg2, whose libpq is its own
    driver = "psycopg" if is_psycopg3 else "psycopg2"
    can = libpq_version(driver=driver) >= DIRECT_TLS_LIBPQ
    settings = neon_django.config(_neon_url(neon_local, front))
    assert settings["OPTIONS"].get("sslnegotiation") == ("direct" if can else None)


@pytest.mark.parametrize("tls", ["sslmode", "context"])
def test_asyncpg_opens_tls_directly_with_alpn_where_it_can(neon_local, front, tls):
    """asyncpg >= 0.32 (ALPN on its own contexts); it cannot use ``hostaddr``, so the URL
    asks for direct TLS itself on the front's address. ``context``: a root certificate makes
    neon-connect build the SSLContext, which asyncpg uses as given: it must offer ALPN too."""
    url = neon_local.pooled_url.replace(f":{neon_local.state.pooler_port}/", f":{front.port}/")
    if tls == "context":
        url += f"&sslrootcert={neon_local.state.runtime_dir}/server.crt"
    if DIRECT:  # the keyword is checked against psycopg's libpq, which must know it
        url += "&sslnegotiation=direct"
    kwargs = asyncpg_params(resolve(url).app)
    supported = "direct_tls" in kwargs
    assert isinstance(kwargs["ssl"], ssl.SSLContext) is (tls == "context")

    async def select_one() -> int:
        conn = await asyncpg.connect(**kwargs)
        try:
            return int(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    assert asyncio.run(select_one()) == 1
    assert front.negotiations == (["direct+alpn"] if supported else [front.negotiations[0]])
    assert _ways(front) == ["direct" if supported else "sslrequest"]


def test_a_direct_tls_connect_costs_one_round_trip_fewer_where_libpq_can(neon_local, front):
    """Counted at the client's side by the benchmark's proxy, in front of the TLS front."""
    from benchmarks.proxy import ProxyProcess

    with ProxyProcess() as proxies:
        port = proxies.add("front", "127.0.0.1", front.port)
        proxies.set_rtt(0.01)  # flights apart, as on a network: each is counted once
        url = _neon_url(neon_local, front).replace(f":{front.port}/", f":{port}/")
        endpoint = resolve(url).app

        def round_trips(params: dict[str, object]) -> int:
            """The fewest of three connects: about one connect in twelve counts one more here
            (timing on a shared machine splits a flight), and the claim is about the floor."""
            counted = []
            for _ in range(3):
                before = proxies.counts()["front"].round_trips
                assert _select_one(params) == 1
                counted.append(proxies.counts()["front"].round_trips - before)
            return min(counted)

        direct = round_trips(psycopg_params(endpoint))
        plain = round_trips(psycopg_params(endpoint, client_version=DIRECT_TLS_LIBPQ - 1))
    assert _ways(front) == [EXPECTED] * 3 + ["sslrequest"] * 3
    assert direct == plain - (1 if DIRECT else 0), (direct, plain)
