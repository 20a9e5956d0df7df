"""A lone URL pointing at PgBouncer without ``pgbouncer=true`` (issue 23, item 3).

Such a URL is taken for plain PostgreSQL (a non-Neon host has no ``-pooler`` to go by). At
the first connect the adapters now ask the endpoint (``neon_connect._probes``): the backend
pid PgBouncer announces is made up, and a second connection gets the first one's server.
Then ``create_engine()`` refuses its client pool and Django's backend refuses to connect,
both naming ``pgbouncer=true`` and ``DATABASE_URL_UNPOOLED``. Real PgBouncer (the stand-in's,
transaction mode), real drivers.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy
from django.core.exceptions import ImproperlyConfigured
from sqlalchemy.pool import NullPool, QueuePool

import neon_django
import neon_sqlalchemy._engines
from neon_connect import DoublePoolingError, Secret, resolve
from neon_connect._check import run_check
from neon_connect._probes import answers_like_transaction_pooler, pooler_probe_wanted
from neon_sqlalchemy import create_engine
from tests.driver import DJANGO_DRIVER
from tests.helpers import django_alias, run_python

pytestmark = pytest.mark.integration


def _lone_pooler(neon_local, scheme: str = "postgresql") -> Secret:
    """The stand-in's PgBouncer URL alone (it carries no pgbouncer=true)."""
    url = neon_local.state.pooled_url
    assert "pgbouncer" not in url
    return Secret(url.replace("postgresql://", f"{scheme}://", 1))


def _says_the_fix(message: str, neon_local) -> None:
    assert "transaction pooler" in message and "?pgbouncer=true" in message
    assert "DATABASE_URL_UNPOOLED" in message
    assert f"127.0.0.1:{neon_local.state.pooler_port}" in message
    assert "direct endpoint" not in message
    assert neon_local.state.password not in message


def test_the_lone_url_is_taken_for_a_server(neon_local):
    endpoint = resolve(_lone_pooler(neon_local), env={}).app
    assert endpoint.kind == "direct" and not endpoint.transaction_pooler
    assert pooler_probe_wanted(endpoint)


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_create_engine_refuses_a_client_pool_on_it(neon_local, driver):
    engine = create_engine(_lone_pooler(neon_local, f"postgresql+{driver}"), env={})
    assert isinstance(engine.pool, QueuePool)
    with pytest.raises(DoublePoolingError) as info:
        engine.connect()
    engine.dispose()
    _says_the_fix(str(info.value), neon_local)
    assert info.value.__context__ is None or "password" not in repr(info.value.__context__)


def test_create_engine_with_nullpool_connects_and_warns(neon_local, caplog):
    engine = create_engine(_lone_pooler(neon_local), env={}, poolclass=NullPool)
    with caplog.at_level(logging.WARNING, logger="neon_sqlalchemy"):
        for _ in range(2):
            with engine.connect() as conn:
                assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    engine.dispose()
    warned = [r.getMessage() for r in caplog.records if "transaction pooler" in r.getMessage()]
    assert len(warned) == 1  # once per engine
    _says_the_fix(warned[0], neon_local)


def test_the_server_itself_passes_the_probe(neon_local):
    """The control of the probe: the real PostgreSQL, alone, is a server (one SELECT)."""
    engine = create_engine(Secret(neon_local.state.direct_url), env={})
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    engine.dispose()
    endpoint = resolve(Secret(neon_local.state.direct_url), env={}).app
    import psycopg

    with psycopg.connect(neon_local.state.direct_url) as first:
        assert not answers_like_transaction_pooler(
            endpoint, first, lambda: psycopg.connect(neon_local.state.direct_url)
        )


def test_control_without_the_probe_a_client_pool_sits_on_pgbouncer(neon_local, monkeypatch):
    """Before the fix: a QueuePool on top of PgBouncer, and nothing said."""
    monkeypatch.setattr(
        neon_sqlalchemy._engines, "answers_like_transaction_pooler", lambda *a: False
    )
    engine = create_engine(_lone_pooler(neon_local), env={})
    with engine.connect() as conn:
        announced = conn.connection.dbapi_connection.info.backend_pid
        server = conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
    engine.dispose()
    assert isinstance(engine.pool, QueuePool)
    assert announced != server  # PgBouncer answered, under a QueuePool


def _django_wrapper(neon_local, alias: str):
    from django.db import connections

    from neon_django.backend.base import DatabaseWrapper

    settings_ = neon_django.config(_lone_pooler(neon_local), env={})
    settings_ = connections.configure_settings({"default": settings_})["default"]
    return DatabaseWrapper(settings_, alias=alias)


def test_django_backend_refuses_it_naming_the_alias(neon_local, django_db_blocker):
    wrapper = _django_wrapper(neon_local, "lone_pooler")
    assert wrapper.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is False  # taken for a server
    with django_db_blocker.unblock(), pytest.raises(ImproperlyConfigured) as info:
        wrapper.ensure_connection()
    assert wrapper.connection is None
    _says_the_fix(str(info.value), neon_local)
    assert "DATABASES['lone_pooler']" in str(info.value)


def test_control_without_the_probe_django_runs_on_pgbouncer_as_on_a_server(
    neon_local, django_db_blocker, monkeypatch
):
    import neon_django.backend.base as backend

    monkeypatch.setattr(backend, "answers_like_transaction_pooler", lambda *a: False)
    settings_ = neon_django.config(_lone_pooler(neon_local), env={})
    with django_db_blocker.unblock(), django_alias("lone_pooler_unfixed", settings_) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            server = cursor.fetchone()[0]
        announced = (
            db.connection.info.backend_pid
            if DJANGO_DRIVER == "psycopg"
            else db.connection.get_backend_pid()
        )
        assert db.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is False
    assert announced != server  # PgBouncer, with server-side cursors on


def _check_cli(*args: str, env: dict[str, str]):
    drop = ("DATABASE_URL", "POSTGRES_URL", "PG", "DIRECT_URL")
    return run_python("-m", "neon_connect", "check", *args, env=env, drop=drop, timeout=60)


def test_neon_connect_check_reports_it(neon_local):
    result = _check_cli(env={"DATABASE_URL": neon_local.state.pooled_url})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEMS FOUND" in result.stdout and "\nOK" not in result.stdout
    assert "a transaction pooler (PgBouncer) answers there" in result.stdout
    assert "add ?pgbouncer=true to DATABASE_URL" in result.stdout
    assert neon_local.state.password not in result.stdout + result.stderr


def test_control_neon_connect_check_on_the_server_alone_is_ok(neon_local):
    """The same lone URL shape on PostgreSQL itself: OK, no pooler reported."""
    report = run_check(env={"DATABASE_URL": neon_local.state.direct_url})
    assert report.ok
    (app,) = report.endpoints
    assert app.kind == "direct" and app.behaves_as_transaction_pooler is False


def test_control_without_the_probe_check_says_ok_on_pgbouncer(neon_local, monkeypatch):
    import neon_connect._check

    monkeypatch.setattr(neon_connect._check, "answers_like_transaction_pooler", lambda *a: False)
    report = run_check(env={"DATABASE_URL": neon_local.state.pooled_url})
    assert report.ok  # "kind direct ... OK": PgBouncer taken for a server
    assert report.endpoints[0].kind == "direct"
