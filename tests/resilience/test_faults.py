"""The fault hooks (neon_local.faults): each one does to clients what it says."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import neon_sqlalchemy
from neon_connect.cli import main
from neon_local.pytest_plugin import NeonLocal
from neon_local.standin import _pgbouncer_pid, _postgres_pid

pytestmark = pytest.mark.integration


def test_cold_start_pause_holds_queries_for_the_pause(standin, faults):
    with psycopg.connect(standin.pooled_url, autocommit=True) as conn:
        timer = threading.Thread(target=faults.cold_start, args=(0.6,))
        started = time.monotonic()
        timer.start()
        time.sleep(0.1)
        conn.execute("SELECT 1")
        held = time.monotonic() - started
        timer.join()
    assert held >= 0.5


def test_suspend_terminates_idle_and_in_transaction_backends(standin, faults):
    idle = psycopg.connect(standin.direct_url, autocommit=True)
    busy = psycopg.connect(standin.direct_url)
    busy.execute("SELECT 1")  # now idle in transaction
    assert faults.suspend() >= 2
    for conn in (idle, busy):
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        conn.close()


@pytest.mark.parametrize("how", ["kill", "shutdown"])
def test_pooler_restart_gives_a_new_pgbouncer_that_serves(standin, faults, how):
    before = _pgbouncer_pid(standin)
    faults.restart_pooler(how=how)
    assert _pgbouncer_pid(standin) not in (None, before)
    with psycopg.connect(standin.pooled_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart_gives_a_new_postmaster_reached_directly(standin, faults, mode):
    before = _postgres_pid(standin)
    faults.restart_server(mode=mode)
    assert _postgres_pid(standin) not in (None, before)
    with psycopg.connect(standin.direct_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_exhausted_pool_times_late_callers_out_then_restores(standin, faults):
    errors: list[BaseException] = []

    def slow_client() -> None:
        try:
            with psycopg.connect(standin.pooled_url) as conn:
                conn.execute("SELECT pg_sleep(0.8)")
        except psycopg.Error as exc:
            errors.append(exc)

    with faults.exhausted_pool(pool_size=1, query_wait_timeout=1):
        threads = [threading.Thread(target=slow_client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert any("query_wait_timeout" in str(e) for e in errors), errors
    config = {r["key"]: r["value"] for r in NeonLocal(standin).show("CONFIG")}
    assert config["query_wait_timeout"] == "120"  # PgBouncer's default, back again
    assert config["default_pool_size"] == str(standin.pool_size)


def test_a_full_direct_endpoint_fails_fast_and_points_to_the_pooled_one(standin, faults):
    engine = neon_sqlalchemy.create_engine(env=standin.env(), direct=True)
    with faults.full_direct_endpoint() as held:
        assert held >= standin.max_connections - 10
        started = time.monotonic()
        with pytest.raises(Exception, match="too many clients|slots are reserved") as info:
            engine.connect()
        assert time.monotonic() - started < 5  # not retried for the whole retry budget
    notes = "\n".join(getattr(info.value.orig, "__notes__", []))  # type: ignore[attr-defined]
    assert "send app traffic to the pooled endpoint" in notes
    engine.dispose()
    with engine.connect():  # the slots are free again
        pass
    engine.dispose()


def test_the_fixture_and_the_cli_reach_the_faults(standin, capsys):
    assert NeonLocal(standin).faults.state is standin
    busy = psycopg.connect(standin.direct_url)
    busy.execute("SELECT 1")
    assert main(["local", "fault", "suspend", "--dir", standin.directory]) == 0
    assert "terminated" in capsys.readouterr().err
    with pytest.raises(psycopg.OperationalError):
        busy.execute("SELECT 1")
    busy.close()
    assert (
        main(["local", "fault", "restart-pooler", "--seconds", "0", "--dir", standin.directory])
        == 0
    )
