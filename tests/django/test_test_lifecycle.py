"""The test-database life cycle users run every day, and the ways test code touches a connection.

Each scenario runs on neon_django's backend and, as the control, on the same backend with this
release's fixes taken out (``tests/django/unfixed_backend``), which fails the way the issue
measured. Django's own runner and pytest-django run ``tests/django/lifecycle_probe.py`` in a
subprocess, so their create, clone, keep and drop steps are the real ones.
"""

from __future__ import annotations

import copy
import re
from unittest import mock

import pytest
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper as DjangoWrapper
from django.test import override_settings

import neon_django
from tests.django.unfixed_backend.base import OldSettingsWrapper
from tests.helpers import run_python

pytestmark = pytest.mark.integration

PROBE = "tests.django.lifecycle_probe"
NO_DELETER = "has no deleter|can't delete attribute"  # Python 3.11+ | 3.10


def _env(name, unfixed):
    env = {"NEON_TESTS_TEST_DB": name}
    if unfixed:
        env.update(NEON_TESTS_MODE="unfixed", NEON_TESTS_UNFIXED=unfixed)
    return env


def _django(*args, name, unfixed=None):
    env = {"DJANGO_SETTINGS_MODULE": "tests.django_settings", **_env(name, unfixed)}
    return run_python("-m", "django", *args, env=env, timeout=180)


def _pytest(*args, name, unfixed=None):
    env = _env(name, unfixed)
    probe = "tests/django/lifecycle_probe.py"
    return run_python("-m", "pytest", probe, "-q", "-p", "no:randomly", *args, env=env, timeout=180)


def _databases(neon_local, name):
    with neon_local.superuser() as su:
        rows = su.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s ORDER BY 1",
            (name, f"{name}\\_%"),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture
def dropped(neon_local):
    """Names of test databases to drop (as superuser) after the test, whatever happened."""
    names: list[str] = []
    yield names
    with neon_local.superuser() as su:
        for name in names:
            for db in [name, f"{name}_1", f"{name}_2"]:
                su.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


# -- settings_dict, the way test code touches it ------------------------------------------


def _wrappers():
    settings = copy.deepcopy(connection.settings_dict)
    stock = {**settings, "ENGINE": "django.db.backends.postgresql"}
    stock.pop("NEON")
    return [
        pytest.param(connection, id="neon_django"),
        pytest.param(DjangoWrapper(stock, "default"), id="django"),
    ]


@pytest.mark.parametrize("wrapper", _wrappers())
def test_mock_patch_object_restores_settings_dict(wrapper):
    """Django's own test_nodb_cursor does this; the patch must come off as it went on."""
    own = wrapper.settings_dict
    with mock.patch.object(wrapper, "settings_dict", {**own, "NAME": "postgres"}):
        assert wrapper.settings_dict["NAME"] == "postgres"
    assert wrapper.settings_dict is own


def test_control_the_last_release_left_the_patch_on():
    unfixed = OldSettingsWrapper(copy.deepcopy(connection.settings_dict), "default")
    name = unfixed.settings_dict["NAME"]
    with (  # noqa: PT012
        pytest.raises(AttributeError, match=NO_DELETER),
        mock.patch.object(unfixed, "settings_dict", {**unfixed.settings_dict, "NAME": "postgres"}),
    ):
        pass
    assert unfixed.settings_dict["NAME"] == "postgres" != name  # every later test: wrong database


@pytest.mark.parametrize("wrapper", _wrappers())
def test_settings_dict_can_be_deleted_and_assigned(wrapper):
    own = wrapper.settings_dict
    del wrapper.settings_dict
    with pytest.raises(AttributeError):
        wrapper.settings_dict  # noqa: B018
    with pytest.raises(AttributeError):
        del wrapper.settings_dict
    wrapper.settings_dict = own
    assert wrapper.settings_dict is own


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")
def test_override_settings_leaves_the_connection_alone():
    own = connection.settings_dict
    with override_settings(DATABASES={"default": {**own, "NAME": "elsewhere"}}):
        assert connection.settings_dict is own
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        assert cursor.fetchone()[0] == own["NAME"]


@pytest.mark.django_db(transaction=True)
def test_copy_routes_as_the_original_and_owns_its_settings():
    """A copy made inside direct() is of the alias's own settings: it goes direct while the
    block lasts and pooled after it, like the original; changing it changes nothing else."""
    with neon_django.direct():
        routed = connection.copy()
        assert routed.settings_dict["HOST"] == connection.settings_dict["HOST"]
        assert routed.settings_dict["PORT"] == connection.neon["DIRECT"]["PORT"]
    assert routed.settings_dict["PORT"] == connection.settings_dict["PORT"]
    assert routed.settings_dict["PORT"] != connection.neon["DIRECT"]["PORT"]
    routed.settings_dict["NAME"] = "changed"
    assert connection.settings_dict["NAME"] != "changed"
    routed.close()


@pytest.mark.django_db(transaction=True)
def test_writes_to_routed_settings_reach_the_alias():
    """Django renames NAME for test databases and update()s it in a parallel worker."""
    own = connection.settings_dict
    name = own["NAME"]
    try:
        with neon_django.direct():
            connection.settings_dict.update({"NAME": "renamed"})
            connection.settings_dict["TIME_ZONE"] = None
        assert own["NAME"] == "renamed"
    finally:
        own["NAME"] = name


# -- Django's runner: parallel workers, --keepdb, a failed run ----------------------------


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_parallel_workers(neon_local, dropped, start):
    name = f"test_neon_life_{start}"
    dropped.append(name)
    runner = ["--testrunner", f"{PROBE}.SpawnRunner"] if start == "spawn" else []
    result = _django("test", PROBE, "--noinput", "--parallel", "2", *runner, name=name)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Ran 6 tests" in result.stderr
    assert _databases(neon_local, name) == []  # the run dropped its databases, clones too


def test_control_parallel_workers_on_the_last_release(neon_local, dropped):
    name = "test_neon_life_unfixed"
    dropped.append(name)
    result = _django(
        "test", PROBE, "--noinput", "--parallel", "2", name=name, unfixed="settings_dict"
    )
    assert result.returncode != 0
    assert re.search(NO_DELETER, result.stderr)


def test_keepdb_then_a_normal_run(neon_local, dropped):
    name = "test_neon_life_keep"
    dropped.append(name)
    kept = _django("test", PROBE, "--noinput", "--keepdb", name=name)
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert _databases(neon_local, name) == [name]
    normal = _django("test", PROBE, "--noinput", name=name)
    assert normal.returncode == 0, normal.stderr[-3000:]
    assert "Destroying old test database" in normal.stderr
    assert _databases(neon_local, name) == []


def test_control_keepdb_then_a_normal_run_on_the_last_release(neon_local, dropped):
    name = "test_neon_life_keep_unfixed"
    dropped.append(name)
    _django("test", PROBE, "--noinput", "--keepdb", name=name, unfixed="creation")
    normal = _django("test", PROBE, "--noinput", name=name, unfixed="creation")
    assert normal.returncode == 2
    assert "is being accessed by other users" in normal.stderr


def test_pytest_django_reuse_db_then_create_db(neon_local, dropped):
    name = "test_neon_life_reuse"
    dropped.append(name)
    reused = _pytest("--reuse-db", name=name)
    assert reused.returncode == 0, reused.stdout[-3000:]
    assert _databases(neon_local, name) == [name]
    again = _pytest("--reuse-db", name=name)
    assert again.returncode == 0, again.stdout[-3000:]
    created = _pytest("--create-db", name=name)
    assert created.returncode == 0, created.stdout[-3000:]
    assert "6 passed" in created.stdout


def test_control_pytest_django_create_db_on_the_last_release(neon_local, dropped):
    name = "test_neon_life_reuse_unfixed"
    dropped.append(name)
    _pytest("--reuse-db", name=name, unfixed="creation")
    created = _pytest("--create-db", name=name, unfixed="creation")
    assert created.returncode != 0
    assert "is being accessed by other users" in created.stdout + created.stderr


def test_a_session_left_open_does_not_stop_the_drop(neon_local, dropped):
    """The probe leaves a pooled connection in a transaction, as a failed run does."""
    name = "test_neon_life_open"
    dropped.append(name)
    result = _django("test", PROBE, "--noinput", name=name)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _databases(neon_local, name) == []


def test_control_a_session_left_open_stops_a_plain_drop(neon_local, dropped):
    name = "test_neon_life_open_unfixed"
    dropped.append(name)
    result = _django("test", PROBE, "--noinput", name=name, unfixed="creation")
    assert "is being accessed by other users" in result.stderr
    assert _databases(neon_local, name) == [name]
