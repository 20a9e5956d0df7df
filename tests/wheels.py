"""Both distributions as users get them: built wheels, installed into fresh venvs.

Used by ``tests/test_packaging.py`` (what a production install holds) and ``tests/test_docs.py``
(the getting-started pages run where FastAPI, Flask-SQLAlchemy and SQLModel are installed).
"""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

from tests.helpers import ROOT


def run(
    *args: str | Path, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command outside this test run: none of its venv, Django settings or URLs leak in."""
    leaks = ("PYTHON", "VIRTUAL_ENV", "DJANGO_", "NEON_TESTS_", "NEON_LOCAL_", "DATABASE_URL")
    base = {k: v for k, v in os.environ.items() if not k.startswith(leaks)}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def build_wheels(out: Path) -> dict[str, Path]:
    """``{"neon_connect": …, "neon_local": …}``, built from this checkout (by a pip of its own:
    the matrix's venvs are made by uv and have none)."""
    builder = out / ".builder"
    venv.create(builder, with_pip=True)
    for project in (ROOT, ROOT / "neon-local"):
        built = run(
            builder / "bin" / "python", "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, project,
            cwd=out,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"neon_connect", "neon_local"}, found
    return found


def fresh_venv(path: Path, *requirements: str | Path) -> Path:
    """A venv holding only ``requirements`` (and what they need); returns its python."""
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "-q", *requirements, cwd=path)
    assert installed.returncode == 0, installed.stderr
    return python
