"""Kept connections heal themselves where they are reused outside the request cycle.

Task workers, management commands and LISTEN workers run loops that Django's request signals
never reach, on a stand-in of their own here. After a pooler restart or a suspend, the loop
goes on: pooled connections are replaced before anything is sent, a ``direct()`` session
that ended raises one clear error and then connects afresh. The controls, Django's own health
check and SQLAlchemy without the checkout check, fail on every query after the fault, as the
issue measured.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from django.db.utils import OperationalError

import neon_django
from neon_connect._liveness import Liveness, liveness
from neon_local.faults import Faults
from neon_local.standin import StandInState, running
from resilience import workers
from tests.django.unfixed_backend.base import DjangosHealthCheckWrapper
from tests.helpers import django_alias

pytestmark = pytest.mark.integration

LOOPS = 12
FAULT_AT = 4


@pytest.fixture(scope="module", params=["through the proxy", "pgbouncer itself"])
def own(request: pytest.FixtureRequest) -> Iterator[StandInState]:
    """Both ways a worker meets the pooler: behind the Neon-like proxy, as on Neon (a restart
    behind it closes the worker's connection from the proxy), and PgBouncer itself."""
    proxied = request.param == "through the proxy"
    with running(pool_size=3, max_connections=20, proxy=proxied) as state:
        assert state.proxied is proxied
        yield state


def _suspend(state: StandInState) -> None:
    """Neon's suspend (every backend terminated), returning once the backends have exited:
    their goodbye is then on the clients' sockets, as it is long before a worker's next use
    after a real suspend. (A goodbye still in flight is the residue the check cannot see.)"""
    workers.strike(state, "suspend")


def strikes(state: StandInState) -> dict[str, Callable[[], None]]:
    """The faults a worker meets, by name (resilience/workers.py's); each returns once the
    stand-in is back."""
    return {
        "pooler restart": lambda: workers.strike(state, "pooler restart"),
        "suspend": lambda: workers.strike(state, "suspend"),
        "server restart": lambda: workers.strike(state, "server restart (fast)"),
    }


def _pooler_queries(state: StandInState) -> int:
    with psycopg.connect(state.admin_url, autocommit=True) as admin:
        rows = admin.execute("SHOW STATS").fetchall()
    return sum(int(row[3]) for row in rows if row[0] == "neondb")  # total_query_count


def test_the_check_tells_dead_from_alive_without_sending_anything(own):
    faults = Faults(own)
    with psycopg.connect(own.pooled_url, autocommit=True) as pooled:
        pooled.execute("SELECT 1")
        before = _pooler_queries(own)
        assert [liveness(pooled) for _ in range(50)] == [Liveness.ALIVE] * 50
        assert _pooler_queries(own) == before  # fifty checks, no query
        faults.restart_pooler()
        assert liveness(pooled) is Liveness.DEAD
    with psycopg.connect(own.direct_url, autocommit=True) as direct:
        direct.execute("SELECT 1")
        assert liveness(direct) is Liveness.ALIVE
        _suspend(own)
        assert liveness(direct) is Liveness.DEAD


# -- Django --------------------------------------------------------------------------------


def _worker_alias(state: StandInState, cls: type | None = None):
    """DATABASES["worker"] on this module's stand-in, kept (conn_max_age="auto": 240 s)."""
    return django_alias("worker", neon_django.config(env=state.env()), cls)


def _loop(db, fault, *, direct=False) -> list[str]:
    """One SELECT per iteration, as a worker does; the fault strikes between two of them.
    A ``direct()`` worker (a LISTEN worker, say) runs its whole loop inside the block."""
    errors = []
    with db.neon_direct() if direct else contextlib.nullcontext():
        for i in range(LOOPS):
            if i == FAULT_AT:
                fault()
            try:
                with db.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except Exception as error:  # what the worker would see
                errors.append(f"{type(error).__name__}: {error}".splitlines()[0])
    db.close()
    return errors


@pytest.mark.parametrize("fault", ["pooler restart", "suspend", "server restart"])
def test_a_django_loop_outside_requests_goes_on_after_a_fault(own, django_db_blocker, fault):
    strike = strikes(own)[fault]
    with django_db_blocker.unblock(), _worker_alias(own) as db:
        errors = _loop(db, strike)
    assert errors == []


def test_control_with_djangos_health_check_the_loop_fails_for_good(own, django_db_blocker):
    with django_db_blocker.unblock(), _worker_alias(own, DjangosHealthCheckWrapper) as db:
        errors = _loop(db, Faults(own).restart_pooler)
    assert len(errors) == LOOPS - FAULT_AT  # every query after the fault


def test_a_direct_worker_gets_one_clear_error_then_recovers(own, django_db_blocker):
    with django_db_blocker.unblock(), _worker_alias(own) as db:
        errors = _loop(db, lambda: _suspend(own), direct=True)
    assert len(errors) == 1, errors
    assert "the server ended the direct() session" in errors[0]
    assert errors[0].startswith(OperationalError.__name__)


def test_control_a_direct_worker_with_djangos_health_check_fails_for_good(own, django_db_blocker):
    with django_db_blocker.unblock(), _worker_alias(own, DjangosHealthCheckWrapper) as db:
        errors = _loop(db, lambda: _suspend(own), direct=True)
    assert len(errors) == LOOPS - FAULT_AT


def test_conn_max_age_holds_outside_requests(own, django_db_blocker):
    with django_db_blocker.unblock(), _worker_alias(own) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
        first = db.connection
        db.close_at = 0  # its maximum age has passed
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert db.connection is not first


# The long-lived SQLAlchemy engines, and the same loops as their own processes, are in
# resilience/workers.py (tests/resilience/test_task_workers.py).


def test_keepalives_reach_the_connection_and_the_users_values_win(own):
    """A half-open connection (the peer vanished without a goodbye) is what no socket check
    sees: TCP keepalives and tcp_user_timeout make it fail in bounded time instead."""
    import neon_connect

    def options(conn) -> dict[str, str]:
        return {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}

    with neon_connect.connect(own.pooled_url) as conn:
        got = options(conn)
    assert (got["keepalives"], got["keepalives_idle"], got["keepalives_count"]) == ("1", "30", "3")
    assert got["tcp_user_timeout"] == "60000"
    with neon_connect.connect(own.pooled_url, keepalives_idle=5) as conn:
        assert options(conn)["keepalives_idle"] == "5"


@pytest.mark.parametrize("idle_timeout", [0.2, None])
def test_an_idle_limit_replaces_a_connection_idle_too_long(own, django_db_blocker, idle_timeout):
    """Elastic platforms (Cloud Run, ECS/Fargate, Modal): Neon advises dropping a kept
    connection after 5-10 s idle; None, the control, keeps it."""
    settings = neon_django.config(env=own.env(), idle_timeout=idle_timeout)
    with django_db_blocker.unblock(), django_alias("idle", settings) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
        first = db.connection
        time.sleep(0.3)
        with db.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert (db.connection is first) is (idle_timeout is None)
