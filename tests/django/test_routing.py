"""Which endpoint served what, proven from the servers' side."""

from __future__ import annotations

import copy
import json
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models.signals import pre_migrate
from django.db.transaction import TransactionManagementError
from django.test import AsyncClient, Client, override_settings

import neon_django
from neon_django.management._overrides import next_command
from tests.djangoapp.evidence import route
from tests.helpers import run_python

pytestmark = pytest.mark.integration


def _django(*args, env=None, timeout=120):
    env = {"DJANGO_SETTINGS_MODULE": "tests.django_settings", **(env or {})}
    return run_python("-m", "django", *args, env=env, timeout=timeout)


@pytest.mark.django_db(transaction=True)
def test_requests_run_pooled_sync_and_async(neon_local):
    before = neon_local.pooler_transactions(connection.settings_dict["NAME"])
    sync = Client().get("/items/").json()
    after_sync = neon_local.pooler_transactions(connection.settings_dict["NAME"])
    asynchronous = Client().get("/items-async/").json()
    assert sync["direct"] is False and sync["server_port"] == neon_local.state.pg_port
    assert after_sync > before
    assert asynchronous["direct"] is False and asynchronous["count"] == sync["count"]


@pytest.mark.django_db(transaction=True)
async def test_async_view_under_asgi_is_pooled_like_a_sync_one():
    response = await AsyncClient().get("/items-async/")
    assert response.status_code == 200
    assert response.json()["direct"] is False


@pytest.mark.django_db(transaction=True)
def test_call_command_migrate_runs_direct_then_traffic_is_pooled_again():
    seen = []

    def record(*, using, **kwargs):
        seen.append(route(connections[using]))

    pre_migrate.connect(record)
    try:
        call_command("migrate", verbosity=0)
    finally:
        pre_migrate.disconnect(record)
    assert seen and all(s["direct"] for s in seen)
    assert route(connection)["direct"] is False


def test_manage_py_migrate_in_a_subprocess_runs_direct(tmp_path, neon_local):
    evidence = tmp_path / "evidence.jsonl"
    before = neon_local.pooler_transactions("neondb")
    result = _django("migrate", "--noinput", env={"NEON_TESTS_EVIDENCE": str(evidence)})
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in evidence.read_text().splitlines()]
    assert rows and all(r["direct"] for r in rows)
    # PgBouncer forwarded nothing for it
    assert neon_local.pooler_transactions("neondb") == before


@pytest.mark.django_db(transaction=True)
def test_a_direct_command_of_your_own_runs_direct():
    out = StringIO()
    call_command("neon_probe", stdout=out)
    assert json.loads(out.getvalue())["direct"] is True
    assert route(connection)["direct"] is False
    result = _django("neon_probe")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["direct"] is True


def test_an_override_listed_after_neon_django_is_the_class_we_extend():
    from tests.migrate_override.management.commands.migrate import Command as TheirMigrate

    apps = ["neon_django", "tests.migrate_override", "django.contrib.contenttypes"]
    with override_settings(INSTALLED_APPS=apps):
        assert next_command("migrate") is TheirMigrate
    assert next_command("migrate") is DjangoMigrate


def test_dbshell_opens_psql_on_the_direct_endpoint(neon_local):
    before = neon_local.pooler_transactions("neondb")
    result = _django("dbshell", "--", "-tAc", "SELECT inet_server_port(), current_setting('ssl')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{neon_local.state.pg_port}|on"
    assert neon_local.pooler_transactions("neondb") == before


def test_test_database_creation_and_teardown_run_direct(neon_local, tmp_path):
    """Django's test runner in a subprocess: create, migrate, run, drop, all without PgBouncer."""
    evidence = tmp_path / "evidence.jsonl"
    name = "test_neon_runner"
    before = {r["database"]: int(r["total_xact_count"]) for r in neon_local.show("STATS")}
    result = _django(
        "test", "tests.django.runner_probe", "--noinput", "-v", "2",
        env={"NEON_TESTS_EVIDENCE": str(evidence), "NEON_TESTS_TEST_DB": name},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in evidence.read_text().splitlines()]
    assert rows and all(r["direct"] for r in rows)  # migrate during creation
    after = {r["database"]: int(r["total_xact_count"]) for r in neon_local.show("STATS")}
    assert after.get("postgres", 0) == before.get("postgres", 0)  # CREATE/DROP DATABASE not pooled
    assert after.get(name, 0) > 0  # the tests themselves ran through the pooler
    with neon_local.superuser() as su:
        assert (
            su.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone()[0]
            == 0
        )


def test_plain_django_test_runner_through_the_pooler_fails_teardown(neon_local):
    """The control: Django's own backend on the pooled URL cannot drop its test database."""
    name = "test_neon_plain"
    result = _django(
        "test", "tests.django.runner_probe", "--noinput",
        env={"NEON_TESTS_MODE": "plain", "NEON_TESTS_TEST_DB": name},
    )  # fmt: skip
    assert "is being accessed by other users" in result.stderr
    with neon_local.superuser() as su:
        su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _keepdb_then_parallel(mode, name):
    env = {"NEON_TESTS_TEST_DB": name, **({"NEON_TESTS_MODE": mode} if mode else {})}
    first = _django("test", "tests.django.runner_probe", "--noinput", "--keepdb", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    return _django(
        "test", "tests.django.runner_probe", "--noinput", "--keepdb", "--parallel", "2", env=env
    )


def _drop(neon_local, *names):
    with neon_local.superuser() as su:
        for name in names:
            su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_kept_test_database_is_cloned_for_parallel_workers(neon_local):
    """PgBouncer's idle server connections from the first run hold the template database."""
    name = "test_neon_keep"
    try:
        second = _keepdb_then_parallel(None, name)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "Ran 2 tests" in second.stderr
        with neon_local.superuser() as su:
            clones = su.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (f"{name}_%",)
            ).fetchall()
        assert [c[0] for c in clones] == [f"{name}_1", f"{name}_2"]
    finally:
        _drop(neon_local, name, f"{name}_1", f"{name}_2")


def test_plain_django_cannot_clone_a_kept_test_database_behind_the_pooler(neon_local):
    """The control: Django's own backend on the pooled URL, same two runs."""
    name = "test_neon_keep_plain"
    try:
        second = _keepdb_then_parallel("plain", name)
        assert second.returncode != 0
        assert "is being accessed by other users" in second.stderr
    finally:
        _drop(neon_local, name, f"{name}_1", f"{name}_2")


@pytest.mark.django_db(transaction=True)
def test_direct_block_and_nesting():
    assert route(connection)["direct"] is False
    with neon_django.direct():
        assert route(connection)["direct"] is True
        with neon_django.direct():
            assert route(connection)["direct"] is True
        assert route(connection)["direct"] is True
    assert route(connection)["direct"] is False

    @neon_django.direct()
    def decorated():
        return route(connection)["direct"]

    assert decorated() is True
    assert route(connection)["direct"] is False


@pytest.mark.django_db(transaction=True)
def test_direct_refuses_to_enter_inside_a_transaction_and_changes_nothing():
    with transaction.atomic():
        assert route(connection)["direct"] is False
        with pytest.raises(TransactionManagementError, match="enter"), neon_django.direct():
            pytest.fail("the block must not run")
        assert route(connection)["direct"] is False  # same connection, same transaction
    assert route(connection)["direct"] is False


@pytest.mark.django_db(transaction=True)
def test_a_refused_exit_restores_the_routing_and_the_transaction_keeps_its_connection():
    with pytest.raises(TransactionManagementError, match="leave"), neon_django.direct():
        transaction.set_autocommit(False)  # a transaction opened inside, left open
        assert route(connection)["direct"] is True
    assert route(connection)["direct"] is True  # still the open transaction, on direct
    transaction.rollback()
    transaction.set_autocommit(True)
    assert route(connection)["direct"] is False  # the routing is what it was before
    with neon_django.direct():  # and direct() works again
        assert route(connection)["direct"] is True


@pytest.mark.django_db(transaction=True)
def test_an_exception_in_the_block_restores_the_routing():
    with pytest.raises(ZeroDivisionError), neon_django.direct():
        assert route(connection)["direct"] is True
        _ = 1 / 0
    assert route(connection)["direct"] is False


@pytest.mark.django_db(transaction=True)
def test_direct_is_isolated_to_the_thread():
    entered, checked = threading.Event(), threading.Event()
    other: dict[str, bool] = {}

    def other_thread():
        entered.wait(10)
        other["direct"] = route(connections["default"])["direct"]
        connections.close_all()
        checked.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with neon_django.direct():
        assert route(connection)["direct"] is True
        entered.set()
        checked.wait(10)
    t.join()
    assert other == {"direct": False}


@pytest.mark.django_db(transaction=True)
def test_session_features_inside_direct(neon_local):
    """LISTEN/NOTIFY and a session advisory lock, held across transactions, need direct()."""
    with neon_django.direct(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(777)")
        cursor.execute("LISTEN neon_test")
        raw = connection.connection
        received: list[str] = []
        if hasattr(raw, "add_notify_handler"):  # psycopg 3 (every 3.x): called as it arrives
            raw.add_notify_handler(lambda n: received.append(n.payload))
        cursor.execute("SELECT pg_notify('neon_test', 'hello')")
        if not hasattr(raw, "add_notify_handler"):  # psycopg2 keeps a list
            raw.poll()
            received = [n.payload for n in raw.notifies]
        assert received == ["hello"]
        cursor.execute("SELECT pg_advisory_unlock(777)")
        assert cursor.fetchone()[0] is True
    with neon_local.superuser() as su:
        assert (
            su.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
            == 0
        )


@pytest.mark.django_db(transaction=True)
def test_session_feature_migration_applied_and_left_no_lock(neon_local):
    """0002 (atomic=False: SET, advisory lock, CREATE INDEX CONCURRENTLY, unlock) ran at setup."""
    with neon_local.superuser() as su:  # pg_locks is cluster-wide for advisory locks
        assert (
            su.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
            == 0
        )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'item_name_idx'"
        )
        assert cursor.fetchone() == (True,)


@pytest.mark.django_db(transaction=True)
def test_an_alias_on_the_engine_without_config_keeps_its_connection():
    """``ENGINE: neon_django.backend`` written by hand (no ``NEON`` entry) is Django's own
    backend: one connection serves every query. The last release took the open connection's
    unknown endpoint for a change of route and closed it at every use, even inside its own
    set-up: the first query recursed until RecursionError."""
    from neon_django.backend.base import DatabaseWrapper

    settings = copy.deepcopy(connection.settings_dict)
    settings.pop("NEON")
    plain = DatabaseWrapper(settings, DEFAULT_DB_ALIAS)  # a second object, its own connection
    try:
        drivers_connections = set()
        for _ in range(3):
            with plain.cursor() as cursor:
                cursor.execute("SELECT 1")
            drivers_connections.add(id(plain.connection))
        assert len(drivers_connections) == 1
        assert plain.neon is None and plain.neon_connected_direct is None
    finally:
        plain.close()
