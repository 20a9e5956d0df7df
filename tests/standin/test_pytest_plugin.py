"""The pytest plugin costs nothing until used, and its ini options reach a settings module.

Each case is a small project run by a real pytest in a subprocess (the plugin comes from the
``pytest11`` entry point, as in a user's project).
"""

from __future__ import annotations

import os
import textwrap

import pytest

from tests.helpers import run_python

HEADER = "neon-connect stand-in:"


def _pytest(project, *args):
    drop = ("NEON_LOCAL_POOL", "NEON_LOCAL_MAX", "NEON_TESTS_", "DJANGO_")
    return run_python(
        "-m", "pytest", "-p", "no:cacheprovider", *args, cwd=project, drop=drop, timeout=180
    )


def _project(tmp_path, files):
    os.chmod(tmp_path, 0o755)
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_an_empty_project_starts_nothing_and_prints_nothing(tmp_path):
    project = _project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "test_nothing.py": """
                import sys

                def test_plugin_loaded_but_idle(pytestconfig):
                    assert pytestconfig.pluginmanager.has_plugin("neon_local")
                    assert "neon_local.standin" not in sys.modules
                    assert "psycopg" not in sys.modules
            """,
        },
    )
    result = _pytest(project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert HEADER not in result.stdout
    assert not list(project.glob(".neon-local*"))


@pytest.mark.integration
def test_ini_options_reach_a_settings_module_and_the_header_names_versions(tmp_path):
    """A conftest starting the stand-in at import (as a Django settings module does while
    pytest-django loads it) gets the ini's pool size; the header names the versions."""
    project = _project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\nneon_local_pool_size = 4\nneon_local_max_connections = 30\n",
            "conftest.py": """
                from neon_local.pytest_plugin import local_standin

                STARTED = local_standin()
            """,
            "test_pool.py": """
                import psycopg

                def test_options_and_fixture(neon_local):
                    from conftest import STARTED

                    assert neon_local is STARTED
                    assert neon_local.pool_size == 4
                    with psycopg.connect(neon_local.direct_url) as conn:
                        assert conn.execute("SHOW max_connections").fetchone()[0] == "30"
            """,
        },
    )
    result = _pytest(project, "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith(HEADER))
    assert "PostgreSQL " in header and "PgBouncer " in header
    assert result.stdout.index(HEADER) < result.stdout.index("test_options_and_fixture")


@pytest.mark.integration
def test_a_fixture_started_stand_in_is_named_in_the_summary_and_stopped(tmp_path):
    project = _project(
        tmp_path,
        {
            "pytest.ini": "[pytest]\n",
            "test_fixture.py": """
                import os

                def test_uses_it(neon_local):
                    print("STATE", neon_local.state.directory)
                    assert os.path.isdir(neon_local.state.directory)
            """,
        },
    )
    result = _pytest(project, "-s")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    directory = out.split("STATE ", 1)[1].split("\n", 1)[0].strip()
    assert out.index(HEADER) > out.index("STATE ")  # named at the end, not in the header
    assert not os.path.exists(directory)


def test_our_pure_tests_start_no_stand_in():
    """``pytest tests/core``: the Django settings plan the stand-in (its URLs at import time)
    but only a test not marked ``pure`` starts it (issue 20)."""
    from tests.helpers import ROOT

    pure = _pytest(ROOT, "tests/core", "-q")
    assert pure.returncode == 0, pure.stdout + pure.stderr
    assert " passed" in pure.stdout and HEADER not in pure.stdout


def test_control_a_test_that_needs_the_database_starts_the_planned_stand_in():
    from tests.helpers import ROOT

    live = _pytest(ROOT, "tests/core_live/test_probes.py", "-q")
    assert live.returncode == 0, live.stdout + live.stderr
    assert HEADER in live.stdout
