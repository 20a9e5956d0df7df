"""Management commands: which ones switch, and on which connection each statement ran.

The rule: a command that needs a session (``migrate``, ``dbshell``) runs on the direct
endpoint of its ``--database`` alias; every other command runs where Django runs it. With a
transaction open on that alias, the command runs on the connection that holds it. Other
aliases are never touched. Evidence comes from the socket each statement went through.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
from io import StringIO

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections, transaction
from django.test import TestCase, override_settings
from django.test.utils import CaptureQueriesContext

from neon_django.management._overrides import DIRECT_COMMANDS, DirectCommand
from tests.djangoapp.evidence import route

pytestmark = pytest.mark.integration

DJANGOS_OWN = ("makemigrations", "sqlmigrate", "squashmigrations", "flush", "createcachetable")
DB_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "neon_cache",
    }
}


@contextlib.contextmanager
def statements(alias="default"):
    """(peer port, raw connection id) of every statement the alias runs in the block."""
    seen: list[tuple[int, int]] = []

    def record(execute, sql, params, many, context):
        raw = context["connection"].connection
        with socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
            seen.append((sock.getpeername()[1], id(raw)))
        return execute(sql, params, many, context)

    with connections[alias].execute_wrapper(record):
        yield seen


def _run(name, tmp_path):
    """Run command ``name`` as a test suite would, quietly; returns its stdout."""
    out = StringIO()
    if name == "migrate":
        call_command("migrate", verbosity=0, stdout=out)
    elif name == "makemigrations":
        call_command("makemigrations", "contenttypes", "auth", "--check", "--dry-run", stdout=out)
    elif name == "sqlmigrate":
        call_command("sqlmigrate", "djangoapp", "0001", stdout=out)
    elif name == "squashmigrations":
        _squash_in_a_copy(tmp_path, out)
    elif name == "flush":
        call_command("flush", "--no-input", verbosity=0, inhibit_post_migrate=True)
    elif name == "createcachetable":
        with override_settings(CACHES=DB_CACHE):
            call_command("createcachetable", stdout=out)
    return out.getvalue()


def _squash_in_a_copy(tmp_path, out):
    """squashmigrations writes a file: give it a copy of the app's migrations to write into."""
    package = tmp_path / "squash_copy"
    shutil.copytree("tests/djangoapp/migrations", package)
    sys.path.insert(0, str(tmp_path))
    try:
        with override_settings(MIGRATION_MODULES={"djangoapp": "squash_copy"}):
            call_command("squashmigrations", "djangoapp", "0002", "--no-input", stdout=out)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("squash_copy", None)
    assert any(p.name.startswith("0001_squashed") for p in package.iterdir())


def test_only_session_commands_are_overridden_as_plain_subclasses():
    for name in DIRECT_COMMANDS:
        assert get_commands()[name] == "neon_django"
        command = load_command_class("neon_django", name)
        assert isinstance(command, DirectCommand)
        assert type(command).__module__ == f"neon_django.management.commands.{name}"
        assert "runs on the direct endpoint" in command.create_parser("manage.py", name).description
    assert issubclass(type(load_command_class("neon_django", "migrate")), DjangoMigrate)
    for name in DJANGOS_OWN:
        assert get_commands()[name] == "django.core"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["migrate", *DJANGOS_OWN])
def test_command_outside_a_transaction(name, neon_local, tmp_path):
    expected = neon_local.state.pg_port if name == "migrate" else neon_local.state.pooler_port
    with statements() as seen:
        _run(name, tmp_path)
    if name != "squashmigrations":  # it reads migration files only
        assert seen and {port for port, _ in seen} == {expected}
    assert route(connections["default"])["direct"] is False  # traffic is pooled again


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["migrate", *DJANGOS_OWN])
def test_command_inside_a_transaction_runs_on_the_connection_that_holds_it(
    name, neon_local, tmp_path
):
    connection = connections["default"]
    with transaction.atomic():
        connection.ensure_connection()
        holder = id(connection.connection)
        with statements() as seen:
            _run(name, tmp_path)
        assert connection.in_atomic_block
        assert all(raw == holder for _, raw in seen)
        assert {port for port, _ in seen} <= {neon_local.state.pooler_port}
        # squashmigrations reads migration files; since Django 6.1 it asks no database at all
        assert seen or name == "squashmigrations"
    assert route(connection)["direct"] is False


@pytest.mark.django_db(transaction=True, databases=["default", "binding"])
def test_migrate_switches_only_its_own_alias(neon_local):
    other = connections["binding"]
    with transaction.atomic(using="binding"):
        other.ensure_connection()
        holder = other.connection
        with statements() as seen:
            call_command("migrate", database="default", verbosity=0)
        assert {port for port, _ in seen} == {neon_local.state.pg_port}
        assert other.connection is holder and other.in_atomic_block  # untouched


@pytest.mark.django_db(transaction=True)
def test_dbshell_inside_a_transaction_still_opens_psql_on_the_direct_endpoint(neon_local, capfd):
    with transaction.atomic():
        assert route(connections["default"])["direct"] is False  # the transaction is pooled
        call_command("dbshell", "--", "-c", "\\conninfo")  # where psql itself connected
        assert connections["default"].in_atomic_block
    assert f'at port "{neon_local.state.pg_port}"' in capfd.readouterr().out


class DBCacheRouter:
    """Django's cache test router: the cache table lives on 'binding' only."""

    def db_for_read(self, model, **hints):
        return "binding" if model._meta.app_label == "django_cache" else None

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, **hints):
        return db == "binding" if app_label == "django_cache" else None


@override_settings(
    CACHES={"default": {**DB_CACHE["default"], "LOCATION": "routed_cache"}},
    DATABASE_ROUTERS=[DBCacheRouter()],
)
class CreateCacheTableObservesTheRouter(TestCase):
    """Django's test_createcachetable_observes_database_router, on two neon_django aliases."""

    databases = {"default", "binding"}

    def test_createcachetable_observes_database_router(self) -> None:
        with self.assertNumQueries(0, using="default"):
            call_command("createcachetable", database="default", verbosity=0)
        with CaptureQueriesContext(connections["binding"]) as queries:
            call_command("createcachetable", database="binding", verbosity=0)
        self.assertTrue(any('CREATE TABLE "routed_cache"' in q["sql"] for q in queries))
