"""Round trips per Django request on a kept connection, counted by the benchmark's proxy.

The request of docs/benchmarks.md: two reads and one write in one ``atomic()``. Its floor is
4 round trips: three statements and ``COMMIT``, with ``BEGIN`` sent in the first statement's
message (Django; psycopg 3 sends it alone, one round trip more). Django's health check adds
one more, a ``SELECT 1``, at each request; the liveness check asks the socket instead.
"""

from __future__ import annotations

import psycopg
import pytest
from django.core import signals
from django.db import transaction

import neon_django
from benchmarks.proxy import ProxyProcess
from tests.django.unfixed_backend.base import DjangosHealthCheckWrapper
from tests.driver import DJANGO_DRIVER
from tests.helpers import django_alias

pytestmark = pytest.mark.integration

BEGIN_ALONE = 1 if DJANGO_DRIVER == "psycopg2" else 0
"""psycopg2 sends ``BEGIN`` alone (the matrix's psycopg2 session): one round trip more."""


def _round_trips_of_a_request(neon_local, django_db_blocker, cls=None) -> int:
    with psycopg.connect(neon_local.direct_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE IF NOT EXISTS rt_items (id serial PRIMARY KEY, note text)")
    with ProxyProcess() as proxies:
        port = proxies.add("pooled", "127.0.0.1", neon_local.state.pooler_port)
        pooled = neon_local.pooled_url.replace(f":{neon_local.state.pooler_port}/", f":{port}/")
        pooled += "&pgbouncer=true"  # a lone URL: say it is the pooler (else the probe refuses)
        settings = neon_django.config(pooled, direct_url=neon_local.direct_url)
        assert settings["CONN_MAX_AGE"] > 0 and settings["CONN_HEALTH_CHECKS"]  # the default

        def request():
            signals.request_started.send(sender=None)
            with transaction.atomic(using="rt"), db.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM rt_items")
                cursor.execute("SELECT id FROM rt_items ORDER BY id DESC LIMIT 1")
                cursor.execute("INSERT INTO rt_items (note) VALUES ('hit')")
            signals.request_finished.send(sender=None)

        with django_db_blocker.unblock(), django_alias("rt", settings, cls) as db:
            request()  # connects; the connection is kept
            before = proxies.counts()["pooled"].round_trips
            request()
            return proxies.counts()["pooled"].round_trips - before


def test_a_request_on_a_kept_connection_pays_four_round_trips(neon_local, django_db_blocker):
    """Three statements and COMMIT: BEGIN travels with the first statement (issue 24)."""
    assert _round_trips_of_a_request(neon_local, django_db_blocker) == 4 + BEGIN_ALONE


@pytest.mark.psycopg3_only
def test_control_with_begin_sent_alone_it_pays_five(neon_local, django_db_blocker, monkeypatch):
    from neon_django.backend import _begin_with_first_statement as first_statement

    monkeypatch.setattr(first_statement, "supported", lambda connection: False)
    assert _round_trips_of_a_request(neon_local, django_db_blocker) == 5


def test_control_djangos_health_check_pays_one_more(neon_local, django_db_blocker):
    rounds = _round_trips_of_a_request(neon_local, django_db_blocker, DjangosHealthCheckWrapper)
    assert rounds == 5 + BEGIN_ALONE


def _sqlalchemy_round_trips(neon_local, *, values: bool = False, **engine_kwargs) -> int:
    import warnings

    import sqlalchemy as sa

    import neon_sqlalchemy

    with psycopg.connect(neon_local.direct_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE IF NOT EXISTS rt_items (id serial PRIMARY KEY, note text)")
    with ProxyProcess() as proxies:
        port = proxies.add("pooled", "127.0.0.1", neon_local.state.pooler_port)
        pooled = neon_local.pooled_url.replace(f":{neon_local.state.pooler_port}/", f":{port}/")
        pooled += "&pgbouncer=true"  # a lone URL: say it is the pooler (else the probe refuses)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", neon_sqlalchemy.NeonClientPoolWarning)
            engine = neon_sqlalchemy.create_engine(pooled, allow_client_pool=True, **engine_kwargs)

        def request():
            with engine.begin() as conn:
                if values:  # bound on the server: BEGIN goes in a pipeline with the first
                    conn.execute(
                        sa.text("SELECT count(*) FROM rt_items WHERE note = :n"), {"n": "hit"}
                    )
                    conn.execute(sa.text("SELECT id FROM rt_items WHERE id > :i LIMIT 1"), {"i": 0})
                    conn.execute(sa.text("INSERT INTO rt_items (note) VALUES (:n)"), {"n": "hit"})
                    return
                conn.execute(sa.text("SELECT count(*) FROM rt_items"))
                conn.execute(sa.text("SELECT id FROM rt_items ORDER BY id DESC LIMIT 1"))
                conn.execute(sa.text("INSERT INTO rt_items (note) VALUES ('hit')"))

        try:
            request()  # connects; the pool keeps the connection
            before = proxies.counts()["pooled"].round_trips
            request()
            return proxies.counts()["pooled"].round_trips - before
        finally:
            engine.dispose()


def test_sqlalchemy_allow_client_pool_pays_four_round_trips(neon_local):
    """Three statements and COMMIT: BEGIN travels in the first statement's message (issue 24)."""
    assert _sqlalchemy_round_trips(neon_local) == 4


def test_control_sqlalchemy_with_begin_sent_alone_pays_five(neon_local, monkeypatch):
    from neon_connect import _begin_with_first_statement as first_statement

    monkeypatch.setattr(first_statement, "supported", lambda connection: False)
    assert _sqlalchemy_round_trips(neon_local) == 5


def test_sqlalchemy_statements_with_values_pay_four_too(neon_local):
    """Values bound on the server: BEGIN and the first statement go in one pipeline, behind
    one Sync (see the merge's module)."""
    assert _sqlalchemy_round_trips(neon_local, values=True) == 4


def test_sqlalchemy_statements_with_values_and_prepares_on_pay_four_too(neon_local):
    """With prepares on, psycopg's own Pipeline object sends BEGIN with the first statement,
    so that its statement cache works as before: the same round trips."""
    assert _sqlalchemy_round_trips(neon_local, values=True, prepared_statements=True) == 4


def test_control_sqlalchemy_with_values_and_begin_sent_alone_pays_five(neon_local, monkeypatch):
    from neon_connect import _begin_with_first_statement as first_statement

    monkeypatch.setattr(first_statement, "supported", lambda connection: False)
    assert _sqlalchemy_round_trips(neon_local, values=True) == 5


def test_control_sqlalchemy_with_pre_ping_pays_a_fifth(neon_local):
    assert _sqlalchemy_round_trips(neon_local, pool_pre_ping=True) == 5
