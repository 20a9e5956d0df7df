from __future__ import annotations

from tests.helpers import run_python


def test_importing_the_core_imports_neither_framework():
    code = (
        "import sys, neon_connect, neon_local, neon_connect.cli;"
        "bad = [m for m in ('django', 'sqlalchemy', 'alembic', 'asyncpg') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_m_neon_connect_runs_the_cli():
    from tests.helpers import run_python

    result = run_python("-m", "neon_connect", "--help")
    assert result.returncode == 0, result.stderr
    assert "check" in result.stdout and "alembic-init" in result.stdout
