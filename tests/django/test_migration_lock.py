"""Concurrent ``migrate`` runs queue on neon_django's advisory lock: one applies, nothing twice.

Three real ``manage.py migrate`` processes start at the same moment on a fresh database
whose one migration takes 2 seconds. Without the lock (``--no-migration-lock``, the control)
the later runs create the same table again and fail; with it they wait, then find nothing
to do.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.migrations.recorder import MigrationRecorder
from django.db.models.signals import pre_migrate

import neon_django
from neon_connect import MIGRATION_LOCK_KEY
from tests.helpers import start_python

pytestmark = pytest.mark.integration
RUNS = 3

# Each process says "ready" at a point (after setup, or after planning its migrations), then
# waits to be told to go, so the runs really overlap however busy the machine is.
_START_TOGETHER = """
import os, sys
import django
django.setup()
if os.environ["NEON_TESTS_GO_AT"] == "setup":
    print("ready", flush=True)
    sys.stdin.readline()
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", "migrate", *sys.argv[1:]])
"""
COLLISIONS = ("duplicate key value violates unique constraint", "already exists")


@pytest.fixture
def fresh_database(neon_local, django_db_blocker):
    """A new database that already has Django's (empty) migration table."""
    name = f"race_{uuid.uuid4().hex[:8]}"
    with neon_local.superuser() as su:
        su.execute(f"CREATE DATABASE {name} OWNER neondb_owner")
    # Django's own DDL for its table, run as the app's role
    with (
        django_db_blocker.unblock(),
        connections["default"].schema_editor(collect_sql=True, atomic=False) as editor,
    ):
        editor.create_model(MigrationRecorder.Migration)
    with psycopg.connect(neon_local.state.direct_url, dbname=name) as conn:
        for statement in editor.collected_sql:
            conn.execute(statement)
    yield name
    with neon_local.superuser() as su:
        su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _migrate_at_once(database, *args, go_at):
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.django.race_settings",
        "NEON_TESTS_RACE_DB": database,
        "NEON_TESTS_GO_AT": go_at,
    }
    runs = [start_python("-c", _START_TOGETHER, *args, env=env, stdin=True) for _ in range(RUNS)]
    for run in runs:
        while (line := run.stdout.readline()) != "ready\n":
            assert line, run.communicate()[1]  # the run ended before it was ready
    for run in runs:
        run.stdin.write("go\n")
        run.stdin.flush()
    results = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        results.append((run.returncode, out, err))
    return results


def test_without_the_lock_concurrent_migrates_collide(neon_local, fresh_database):
    results = _migrate_at_once(fresh_database, "--no-migration-lock", go_at="pre_migrate")
    failed = [err for code, _, err in results if code != 0]
    assert failed, "expected concurrent unlocked migrate runs to collide"
    assert all(any(c in err for c in COLLISIONS) for err in failed), failed


def test_with_the_lock_one_applies_and_the_others_find_nothing_to_do(neon_local, fresh_database):
    results = _migrate_at_once(fresh_database, go_at="setup")
    assert [code for code, _, _ in results] == [0] * RUNS, [err for *_, err in results]
    outputs = [out for _, out, _ in results]
    assert sum("Applying slowapp.0001_initial... OK" in out for out in outputs) == 1
    waited = [out for out in outputs if "Applying" not in out]
    assert len(waited) == RUNS - 1
    assert all("Waiting for another migrate run" in out for out in waited)
    assert all("No migrations to apply." in out for out in waited)
    with psycopg.connect(neon_local.state.superuser_url, dbname=fresh_database) as conn:
        rows = conn.execute("SELECT app, name FROM django_migrations ORDER BY id").fetchall()
    assert rows == [("slowapp", "0001_initial")]


def _our_locks(neon_local, pid):
    with neon_local.superuser() as su:
        return su.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (pid, MIGRATION_LOCK_KEY),
        ).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_lock_is_held_during_migrate_and_released_when_it_fails(neon_local):
    held = []

    def observe_then_fail(*, using, **kwargs):
        held.append(_our_locks(neon_local, pid))
        raise RuntimeError("a migration failed")

    with neon_django.direct(), connection.cursor() as cursor:  # keeps the direct session open
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
        pre_migrate.connect(observe_then_fail)
        try:
            with pytest.raises(RuntimeError, match="a migration failed"):
                call_command("migrate", verbosity=0)
        finally:
            pre_migrate.disconnect(observe_then_fail)
        assert held == [1]
        assert connection.connection is not None  # the same session, still open...
        assert _our_locks(neon_local, pid) == 0  # ...no longer holds the lock


def _alembic_style_engine(neon_local, key, database):
    """A direct engine with the Alembic plugin's lock listener, as alembic-init sets it up."""
    import sqlalchemy as sa

    from neon_sqlalchemy._events import add_migration_lock

    url = sa.make_url(neon_local.direct_url.replace("postgresql://", "postgresql+psycopg://", 1))
    engine = sa.create_engine(url.set(database=database), poolclass=sa.pool.NullPool)
    add_migration_lock(engine, key)
    return engine


def _alembic_while_django_migrates(neon_local, django_db_blocker, key):
    """What an Alembic run does while Django's migrate holds its lock: "waits" on the lock
    (seen in pg_locks) or "runs"."""
    import threading
    import time

    from neon_django.management.commands.migrate import migration_lock

    # advisory locks are per database: the one Django's alias uses now (maybe the test one)
    engine = _alembic_style_engine(neon_local, key, connection.settings_dict["NAME"])
    entered = threading.Event()

    def alembic_run():
        with engine.connect() as conn:  # the listener takes the lock on connect
            entered.set()
            conn.exec_driver_sql("SELECT 1")

    def waiting_on_lock():
        with neon_local.superuser() as su:
            return su.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()[0]

    try:
        with django_db_blocker.unblock(), neon_django.direct():
            with migration_lock(connection, on_wait=lambda: None):
                worker = threading.Thread(target=alembic_run)
                worker.start()
                deadline = time.monotonic() + 30
                while not entered.is_set() and not waiting_on_lock():
                    assert time.monotonic() < deadline, "the Alembic run neither ran nor waited"
                    time.sleep(0.05)
                outcome = "runs" if entered.is_set() else "waits"
            worker.join(timeout=30)
            assert entered.is_set()  # once Django let go, the Alembic run went on
            connection.close()
    finally:
        engine.dispose()
    return outcome


def test_django_and_alembic_migrations_queue_on_one_lock(neon_local, django_db_blocker):
    from neon_sqlalchemy._events import MIGRATION_LOCK_KEY as ALEMBIC_KEY

    assert ALEMBIC_KEY == MIGRATION_LOCK_KEY
    assert _alembic_while_django_migrates(neon_local, django_db_blocker, ALEMBIC_KEY) == "waits"


def test_control_with_the_old_alembic_key_they_migrate_at_once(neon_local, django_db_blocker):
    import hashlib

    old = int.from_bytes(
        hashlib.sha256(b"neon_sqlalchemy.migrations").digest()[:8], "big", signed=True
    )
    assert _alembic_while_django_migrates(neon_local, django_db_blocker, old) == "runs"
