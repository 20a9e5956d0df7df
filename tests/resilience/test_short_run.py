"""The resilience harness, shortened for every test run: fewer clients, shorter pauses.

The full set (``make resilience``) writes docs/reliability.md. Here every scenario must end
with 0 lost, 0 doubled and 0 phantom writes, and with no caller error from the connect step
(the only step outside a transaction). A server restart makes PgBouncer refuse every
transaction's first statement for ``server_login_retry`` (15 s): one fast restart per
adapter family checks that no caller sees that refusal (the full run does both modes).
"""

from __future__ import annotations

import pytest

from resilience import scenarios
from resilience.load import Figures

pytestmark = [pytest.mark.integration, pytest.mark.load]

SHORT = scenarios.SHORT


def _check(result: Figures) -> None:
    assert result.acked > 0, result
    assert result.connect_errors == 0, result.errors
    assert (result.lost, result.doubled, result.phantom) == (0, 0, 0), result
    assert result.problems == []


@pytest.mark.parametrize("stack", scenarios.STACKS)
@pytest.mark.parametrize(
    "scenario", [scenarios.cold_start, scenarios.suspend, scenarios.pooler_restart]
)
def test_faults_under_load_lose_and_double_nothing(standin, scenario, stack):
    result = scenario(standin, stack, SHORT)
    _check(result)
    assert result.recovery_s is not None  # writes begun after the fault were acknowledged


def test_a_server_restart_shows_no_caller_the_pooler_refusal(standin):
    """SQLAlchemy in threads, and Django served by gunicorn: the refused statements are sent
    again once PgBouncer logs in to the restarted server; nothing is lost or doubled."""
    with scenarios.serving(standin, "gunicorn"):
        for stack in ("sqlalchemy-sync", "gunicorn-django"):
            result = scenarios.server_restart(standin, stack, SHORT, mode="fast")
            _check(result)
            assert not any(scenarios.REFUSAL in error for error in result.errors), result.errors
            assert result.recovery_s is not None
            if stack == "sqlalchemy-sync":  # counted in this process: the window did open
                assert result.reruns > 0, result.notes


def test_pool_exhaustion_gives_query_wait_timeout_then_recovers(standin):
    result = scenarios.pool_exhaustion(standin, "sqlalchemy-sync", SHORT)
    _check(result)  # also: someone got query_wait_timeout, and no error after the load dropped
    # ProtocolViolation on psycopg 3.3, OperationalError on 3.2: the pooler's own words
    assert all(error.endswith(": query_wait_timeout") for error in result.errors), result.errors


def test_alembic_migrations_during_traffic(standin):
    _check(scenarios.migrations(standin, "sqlalchemy-sync", SHORT))


def test_a_crowd_on_max_connections_30_pooled_fine_direct_fails_fast():
    pooled, direct = scenarios.crowd(SHORT, "sqlalchemy-sync")
    _check(pooled)
    assert pooled.acked >= SHORT.crowd and pooled.tx_errors == 0
    assert direct.connect_errors > 0  # the server's limit, not hidden by retries
    assert (direct.lost, direct.doubled, direct.phantom) == (0, 0, 0)
    assert direct.problems == []  # every error points to the pooled endpoint


def test_served_by_uvicorn_a_pooler_restart_loses_and_doubles_nothing(standin):
    with scenarios.serving(standin):
        for stack in scenarios.UVICORN:
            result = scenarios.pooler_restart(standin, stack, SHORT)
            _check(result)
            assert not any(e.startswith("HTTP") for e in result.errors), result.errors


def test_django_migrations_during_traffic(standin):
    """Two `migrate` runs through neon_django while the app writes: one applies, the other
    waits on the migration lock, the pooler forwards none of it, no write is lost."""
    _check(scenarios.django_migrations(standin, "sqlalchemy-sync", SHORT))
