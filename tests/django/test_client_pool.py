"""``neon_django.config(pool=...)``: Django's own psycopg pool (Django 5.1+), on a direct
endpoint. It raised ``TypeError`` at the first query on every Django that has it: the pool's
``check`` was passed twice, once by us and once by Django."""

from __future__ import annotations

import django
import pytest
from django.core.exceptions import ImproperlyConfigured

import neon_django
from tests.helpers import django_alias

pytestmark = [pytest.mark.integration, pytest.mark.psycopg3_only]  # Django pools psycopg 3 only

POOL_DJANGO = django.VERSION >= (5, 1)


def _pooled_settings(neon_local, **options):
    return neon_django.config(
        neon_local.direct_url, use_pooler=False, pool={"min_size": 0, "max_size": 1}, **options
    )


def _backend_pid(db) -> int:
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _terminate(neon_local, pid: int) -> None:
    with neon_local.superuser() as su:
        su.execute("SELECT pg_terminate_backend(%s)", (pid,))
        su.execute(  # its goodbye is on the socket before the pool hands it out again
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        )


def test_djangos_pool_connects_and_replaces_a_dead_connection_at_checkout(
    neon_local, django_db_blocker
):
    if not POOL_DJANGO:
        with pytest.raises(ImproperlyConfigured, match="needs Django 5.1"):
            _pooled_settings(neon_local)
        return
    with (
        django_db_blocker.unblock(),
        django_alias("client_pool", _pooled_settings(neon_local)) as db,
    ):
        try:
            first = _backend_pid(db)
            db.close()  # back to the pool, which keeps it open
            _terminate(neon_local, first)
            assert _backend_pid(db) != first  # the pool's check saw it dead and replaced it
        finally:
            db.close_pool()


def test_control_without_the_check_the_pool_hands_out_the_dead_connection(
    neon_local, django_db_blocker
):
    if not POOL_DJANGO:
        return  # the refusal on older Djangos is the test above
    settings = _pooled_settings(neon_local, conn_health_checks=False)
    with django_db_blocker.unblock(), django_alias("client_pool_unchecked", settings) as db:
        try:
            first = _backend_pid(db)
            db.close()
            _terminate(neon_local, first)
            with pytest.raises(django.db.OperationalError):
                _backend_pid(db)
        finally:
            db.close_pool()
