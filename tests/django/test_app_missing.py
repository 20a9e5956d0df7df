"""A project whose DATABASES uses neon_django.config() but whose INSTALLED_APPS lacks
"neon_django" (issue 23, item 1): ``check`` fails with neon_django.E010, and ``migrate``
stops before it connects, instead of running through the pooler without a word."""

from __future__ import annotations

import pytest

from tests.helpers import run_python

pytestmark = pytest.mark.integration

# A settings module written by a newcomer who copied only the DATABASES line; run.py prints
# the port of every connection Django opens, so the control can show where migrate went.
SETTINGS = """
import neon_django
SECRET_KEY = "x"
INSTALLED_APPS = __APPS__
DATABASES = {"default": neon_django.config()}
SILENCED_SYSTEM_CHECKS = __SILENCED__
"""
RUN = """
import sys

import django

django.setup()
from django.core.management import execute_from_command_line
from django.db.backends.signals import connection_created


def report(sender, connection, **kwargs):
    print("connected to port", connection.settings_dict["PORT"])


connection_created.connect(report)
execute_from_command_line(["manage.py", *sys.argv[1:]])
"""


# startproject's apps import nothing of the backend before the checks run; no app at all, neither
APPS = [["django.contrib.contenttypes", "django.contrib.auth"], []]


def _project(tmp_path, neon_local, *, silenced: list[str], apps: list[str]):
    settings = SETTINGS.replace("__SILENCED__", repr(silenced)).replace("__APPS__", repr(apps))
    (tmp_path / "newcomer_settings.py").write_text(settings)
    (tmp_path / "run.py").write_text(RUN)

    def manage(*args: str):
        env = {**neon_local.env(), "DJANGO_SETTINGS_MODULE": "newcomer_settings"}
        env["PYTHONPATH"] = str(tmp_path)
        return run_python(str(tmp_path / "run.py"), *args, env=env, cwd=tmp_path)

    return manage


@pytest.mark.parametrize("apps", APPS)
def test_check_and_migrate_stop_without_the_app(neon_local, tmp_path, apps):
    manage = _project(tmp_path, neon_local, silenced=[], apps=apps)
    check = manage("check")
    assert check.returncode == 1
    assert "neon_django.E010" in check.stderr and "INSTALLED_APPS" in check.stderr
    assert 'INSTALLED_APPS = ["neon_django", *INSTALLED_APPS]' in check.stderr
    before = neon_local.pooler_transactions()
    migrate = manage("migrate", "--plan")
    assert migrate.returncode == 1
    assert "neon_django.E010" in migrate.stderr
    assert "connected to port" not in migrate.stdout  # stopped before any connection
    assert neon_local.pooler_transactions() == before


@pytest.mark.parametrize("apps", APPS)
def test_control_without_the_check_migrate_runs_through_the_pooler(neon_local, tmp_path, apps):
    """Today's behaviour, with the check silenced: "no issues", then migrate on PgBouncer."""
    manage = _project(tmp_path, neon_local, silenced=["neon_django.E010"], apps=apps)
    check = manage("check")
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout
    before = neon_local.pooler_transactions()
    migrate = manage("migrate", "--plan")
    assert migrate.returncode == 0, migrate.stderr
    assert f"connected to port {neon_local.state.pooler_port}" in migrate.stdout
    assert neon_local.pooler_transactions() > before


# DATABASES written by hand (here by dj-database-url) with neon_django's ENGINE: config() never
# runs, so only the backend's own registration (neon_django/backend/_checks.py) catches it.
BY_HAND = """
import dj_database_url
SECRET_KEY = "x"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
DATABASES = {"default": dj_database_url.config(engine="neon_django.backend")}
"""
# the control takes the backend's registration out: its checks module imports as empty
WITHOUT_BACKEND_REGISTRATION = """
import sys, types
sys.modules["neon_django.backend._checks"] = types.ModuleType("neon_django.backend._checks")
"""
COUNT = """
from django.core.checks.registry import registry
from neon_django._checks import check_app_installed
import neon_django.backend.base
print("registered", sum(c is check_app_installed for c in registry.get_checks()), "time(s)")
"""


def _by_hand(tmp_path, neon_local, *args: str, prelude: str = ""):
    (tmp_path / "by_hand_settings.py").write_text(BY_HAND)
    (tmp_path / "run.py").write_text(prelude + RUN)
    env = {**neon_local.env(), "DJANGO_SETTINGS_MODULE": "by_hand_settings"}
    env["PYTHONPATH"] = str(tmp_path)
    return run_python(str(tmp_path / "run.py"), *args, env=env, cwd=tmp_path)


def test_backend_registers_the_check_for_databases_written_by_hand(neon_local, tmp_path):
    check = _by_hand(tmp_path, neon_local, "check")
    assert check.returncode == 1
    assert "neon_django.E010" in check.stderr
    assert 'INSTALLED_APPS = ["neon_django", *INSTALLED_APPS]' in check.stderr
    migrate = _by_hand(tmp_path, neon_local, "migrate", "--plan")
    assert migrate.returncode == 1 and "neon_django.E010" in migrate.stderr
    assert "connected to port" not in migrate.stdout


def test_control_without_the_backend_registration_by_hand_is_no_issues(neon_local, tmp_path):
    check = _by_hand(tmp_path, neon_local, "check", prelude=WITHOUT_BACKEND_REGISTRATION)
    assert check.returncode == 0, check.stderr
    assert "no issues" in check.stdout


def test_installed_app_registered_by_config_and_backend_runs_the_check_once(neon_local, tmp_path):
    """config() (twice) and the backend both register it; it is one check, and quiet."""
    apps = ["neon_django", "django.contrib.contenttypes"]
    settings = SETTINGS.replace("__APPS__", repr(apps)).replace("__SILENCED__", "[]")
    settings += 'DATABASES["other"] = neon_django.config()\n'
    (tmp_path / "installed_settings.py").write_text(settings)
    (tmp_path / "run.py").write_text(RUN.replace("\nexecute_from", COUNT + "execute_from", 1))
    env = {**neon_local.env(), "DJANGO_SETTINGS_MODULE": "installed_settings"}
    env["PYTHONPATH"] = str(tmp_path)
    check = run_python(str(tmp_path / "run.py"), "check", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert "registered 1 time(s)" in check.stdout
    assert "no issues" in check.stdout and "E010" not in check.stderr
