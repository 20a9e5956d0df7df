"""A newcomer's path, from the built wheels in a fresh venv with no checkout on the path:
``pip install``, ``django-admin startproject``, the two lines the docs give, ``neon-local
up``, ``check``, ``migrate``, a query; and the likely mistake (the app left out of
``INSTALLED_APPS``), which must stop ``check`` and ``migrate`` instead of migrating through the
pooler. Everything runs as the user would run it: console scripts, in a project folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from tests.wheels import build_wheels, fresh_venv, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory) -> Path:
    """The venv's bin folder: neon-connect[django] and neon-local, from their wheels."""
    wheels = build_wheels(tmp_path_factory.mktemp("wheels"))
    python = fresh_venv(
        tmp_path_factory.mktemp("newcomer") / "venv",
        f"{wheels['neon_connect']}[django]",
        wheels["neon_local"],
    )
    return python.parent


def _project(bin_dir: Path, where: Path, *, with_app: bool) -> Path:
    where.mkdir()
    started = run(bin_dir / "django-admin", "startproject", "mysite", str(where), cwd=where.parent)
    assert started.returncode == 0, started.stderr
    settings = where / "mysite" / "settings.py"
    text = settings.read_text()
    text = "import neon_django\n" + text
    if with_app:  # the docs: "neon_django" first
        text = text.replace("INSTALLED_APPS = [\n", 'INSTALLED_APPS = [\n    "neon_django",\n', 1)
    text = re.sub(
        r"DATABASES = \{.*?\n\}\n",
        'DATABASES = {"default": neon_django.config()}\n',
        text,
        count=1,
        flags=re.S,
    )
    settings.write_text(text)
    return where


@pytest.fixture(scope="module")
def standin(newcomer, tmp_path_factory):
    """``eval "$(neon-local up)"``: the export lines, as a shell would take them."""
    folder = tmp_path_factory.mktemp("local")
    folder.chmod(0o755)
    up = run(
        newcomer / "neon-local", "up", "--dir", folder / ".neon-local", "--database", "mistake",
        cwd=folder,
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    env = dict(
        line.removeprefix("export ").replace("'", "").split("=", 1)
        for line in up.stdout.splitlines()
    )
    yield env
    run(newcomer / "neon-local", "down", "--dir", folder / ".neon-local", cwd=folder)


def test_from_pip_install_to_a_migrated_django_project(newcomer, standin, tmp_path):
    project = _project(newcomer, tmp_path / "shop", with_app=True)
    python = newcomer / "python"
    check = run(python, "manage.py", "check", cwd=project, env=standin)
    assert check.returncode == 0 and "no issues" in check.stdout, check.stdout + check.stderr
    migrate = run(python, "manage.py", "migrate", cwd=project, env=standin)
    assert migrate.returncode == 0, migrate.stderr
    with psycopg.connect(standin["DATABASE_URL_UNPOOLED"]) as conn:
        applied = conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    assert applied > 10  # Django's own apps: auth, admin, contenttypes, sessions
    query = run(
        python, "manage.py", "shell", "-c",
        "from django.contrib.auth.models import User; print(User.objects.count())",
        cwd=project, env=standin,
    )  # fmt: skip
    assert query.returncode == 0, query.stderr
    assert query.stdout.strip().splitlines()[-1] == "0"  # (Django 5.2+ says what it imported)
    report = run(newcomer / "neon-connect", "check", cwd=project, env=standin)
    assert report.returncode == 0, report.stdout + report.stderr
    assert standin["DATABASE_URL"].split("@")[0].split(":")[-1] not in report.stdout  # masked


def test_the_newcomers_mistake_stops_check_and_migrate(newcomer, standin, tmp_path):
    """``neon_django`` left out of ``INSTALLED_APPS``: ``migrate`` would be Django's own, on
    the pooler. ``check`` and ``migrate`` stop, naming the fix."""
    project = _project(newcomer, tmp_path / "shop", with_app=False)
    python = newcomer / "python"
    env = {  # a database of its own (neon-local up --database mistake)
        "DATABASE_URL": standin["DATABASE_URL_MISTAKE"],
        "DATABASE_URL_UNPOOLED": standin["DATABASE_URL_MISTAKE_UNPOOLED"],
    }
    check = run(python, "manage.py", "check", cwd=project, env=env)
    assert check.returncode != 0 and "neon_django.E010" in check.stderr, check.stderr
    migrate = run(python, "manage.py", "migrate", cwd=project, env=env)
    assert migrate.returncode != 0 and "neon_django.E010" in migrate.stderr
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        exists = conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]
    assert exists is None  # nothing migrated through the pooler
