"""Suspends, cold starts and errors inside transactions."""

from __future__ import annotations

import threading

import pytest
from django.core import signals
from django.db import OperationalError, connections, transaction
from django.db.utils import ConnectionHandler

import neon_django
from tests.constants import SECRET

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, databases=["default", "persistent"]),
]


def _backend_pid(alias):
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(neon_local, pid):
    with neon_local.superuser() as su:
        assert su.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True


def test_persistent_connection_killed_by_a_suspend_is_replaced_on_the_next_request(neon_local):
    db = connections["persistent"]
    assert db.settings_dict["CONN_MAX_AGE"] == 60 and db.settings_dict["CONN_HEALTH_CHECKS"] is True
    with neon_django.direct("persistent"):
        pid = _backend_pid("persistent")
        signals.request_finished.send(sender=None)
        assert db.connection is not None  # kept between requests
        _terminate(neon_local, pid)  # what a compute suspend does to an idle session
        signals.request_started.send(sender=None)  # the health check sees it is dead
        assert _backend_pid("persistent") != pid


def test_without_health_checks_the_dead_connection_is_reused(neon_local):
    db = connections["persistent"]
    db.settings_dict["CONN_HEALTH_CHECKS"] = False
    try:
        with neon_django.direct("persistent"):
            pid = _backend_pid("persistent")
            signals.request_finished.send(sender=None)
            _terminate(neon_local, pid)
            signals.request_started.send(sender=None)
            with pytest.raises(
                OperationalError,
                # psycopg 3 reads the server's goodbye; psycopg2 may see only TLS close first
                match="terminating connection due to administrator command|server closed"
                "|SSL connection has been closed unexpectedly",
            ):
                _backend_pid("persistent")
    finally:
        db.settings_dict["CONN_HEALTH_CHECKS"] = True
        db.close()


def test_an_error_inside_a_transaction_surfaces_and_is_not_replayed(neon_local):
    with neon_django.direct():
        pid = _backend_pid("default")
        with pytest.raises(OperationalError), transaction.atomic():
            _terminate(neon_local, pid)
            _backend_pid("default")
    assert _backend_pid("default")  # the next use connects again


def test_connect_waits_out_a_cold_start(neon_local):
    """PgBouncer PAUSE holds new server work like a waking compute; the query then goes through."""
    connections["default"].close()
    with neon_local.admin() as admin:
        admin.execute(f"PAUSE {connections['default'].settings_dict['NAME']}")
        timer = threading.Timer(
            1.0, lambda: admin.execute(f"RESUME {connections['default'].settings_dict['NAME']}")
        )
        timer.start()
        try:
            assert _backend_pid("default")
        finally:
            timer.join()


def test_refused_connect_is_retried_and_named(caplog):
    """Retry logs and the final note name the endpoint config() resolved (no password)."""
    settings = neon_django.config(
        f"postgresql://u:{SECRET}@127.0.0.1:1/db?pgbouncer=true", retry_timeout=0.5
    )
    db = ConnectionHandler({"default": settings})["default"]
    with pytest.raises(OperationalError) as info:
        db.ensure_connection()
    cause = info.value.__cause__
    assert "pooled endpoint 127.0.0.1:1" in "\n".join(getattr(cause, "__notes__", []))
    assert "retry" in caplog.text
    assert SECRET not in caplog.text
