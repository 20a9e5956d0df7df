"""Two distributions from one repository (issue 20): what a production install gets.

``neon-connect`` (the core and both adapters) must carry no test tooling: no stand-in, no
fault hooks, no pytest plugin that every test session of every user would load. Those ship
in ``neon-local``, which users add to their test dependencies. Both wheels are built here
and installed into fresh venvs, as users would, with no checkout on the path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.wheels import build_wheels, fresh_venv, run

pytestmark = pytest.mark.slow  # builds both wheels and fresh venvs

TOOLING = ("neon_local", "pytest_plugin", "standin", "faults", "pgbouncer_build")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    return build_wheels(tmp_path_factory.mktemp("wheels"))


def _fresh_venv(path: Path, *wheels: Path) -> Path:
    return fresh_venv(path, "pytest", *wheels)


@pytest.fixture(scope="module")
def production(wheels, tmp_path_factory) -> Path:
    return _fresh_venv(tmp_path_factory.mktemp("prod") / "venv", wheels["neon_connect"])


def test_a_production_install_lists_no_test_tooling(production):
    files = run(
        production, "-c",
        "import importlib.metadata as m; d = m.distribution('neon-connect');"
        "print('\\n'.join(str(f) for f in d.files));"
        "print('\\n'.join(e.group for e in d.entry_points))",
        cwd=production.parent,
    )  # fmt: skip
    assert files.returncode == 0, files.stderr
    listed = files.stdout.splitlines()
    assert any(line.startswith("neon_connect/") for line in listed)
    assert [line for line in listed if any(word in line for word in TOOLING)] == []
    assert "pytest11" not in listed


def test_pytest_in_an_unrelated_project_shows_no_neon_plugin(production, tmp_path):
    (tmp_path / "test_unrelated.py").write_text("def test_it():\n    assert True\n")
    session = run(
        production, "-m", "pytest", "--trace-config", "-p", "no:cacheprovider", cwd=tmp_path
    )
    assert session.returncode == 0, session.stdout + session.stderr
    assert "1 passed" in session.stdout
    plugins = [line for line in session.stdout.splitlines() if "neon" in line.lower()]
    assert plugins == []


def test_the_cli_names_the_package_that_holds_the_stand_in(production):
    local = run(production.parent / "neon-connect", "local", "up", cwd=production.parent)
    assert local.returncode == 2
    assert "pip install neon-local" in local.stderr and "Traceback" not in local.stderr


def test_the_cli_names_the_extra_that_alembic_init_needs(production):
    """No ``[sqlalchemy]`` extra here: one line naming it, not a ModuleNotFoundError."""
    init = run(
        production.parent / "neon-connect", "alembic-init", "migrations", cwd=production.parent
    )
    assert init.returncode == 2
    assert "Traceback" not in init.stderr
    (line,) = init.stderr.strip().splitlines()
    assert line.endswith('pip install "neon-connect[sqlalchemy]"'), line
    assert not (production.parent / "migrations").exists()


def test_control_with_neon_local_the_plugin_and_the_stand_in_are_there(wheels, tmp_path):
    """What users add to their test dependencies: the fixture and ``neon-local``."""
    python = _fresh_venv(tmp_path / "venv", wheels["neon_connect"], wheels["neon_local"])
    (tmp_path / "test_unrelated.py").write_text("def test_it(neon_local):\n    pass\n")
    listed = run(python, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", cwd=tmp_path)
    assert "neon_local" in listed.stdout and "neon_local/pytest_plugin.py" in listed.stdout
    helps = run(tmp_path / "venv" / "bin" / "neon-local", "up", "--help", cwd=tmp_path)
    assert helps.returncode == 0 and "--database NAME" in helps.stdout
    through = run(
        tmp_path / "venv" / "bin" / "neon-connect",
        "local",
        "status",
        "--dir",
        tmp_path / "none",
        cwd=tmp_path,
    )
    assert through.returncode == 3 and "not running" in through.stdout
