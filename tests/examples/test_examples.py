"""Both example projects and the demo, end to end against the stand-in."""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from neon_local.standin import StandInState, running

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location(
        "example_demo", ROOT / "example_projects" / "demo.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["pgbouncer itself", "through the proxy"])
def standin(request: pytest.FixtureRequest, neon_local) -> Iterator[StandInState]:
    """The suite's stand-in, and one behind the Neon-like proxy, as ``make demo`` runs it."""
    if request.param == "pgbouncer itself":
        yield neon_local.state
        return
    with running(pool_size=5, proxy=True) as state:
        yield state


def test_demo_steps_run_where_they_should(standin):
    demo = _demo()
    out = io.StringIO()
    steps = demo.run(
        demo.Target(env=standin.env(), admin_url=standin.admin_url), requests=60, stream=out
    )
    by_name = {s.name: s for s in steps}
    assert [s.name for s in steps] == [
        "Django migrate",
        "Alembic upgrade head",
        "Django requests (gunicorn)",
        "SQLAlchemy requests (uvicorn)",
        "LISTEN/NOTIFY worker",
    ]
    assert all(s.ok for s in steps), [(s.name, s.figures, s.evidence) for s in steps]
    assert by_name["Django migrate"].endpoint == "direct"
    assert by_name["Alembic upgrade head"].endpoint == "direct"
    assert "PgBouncer forwarded 0 transactions" in by_name["Alembic upgrade head"].evidence
    for name in ("Django requests (gunicorn)", "SQLAlchemy requests (uvicorn)"):
        assert by_name[name].endpoint == "pooled"
        assert by_name[name].figures.startswith("60 requests, 0 errors, median ")
        assert "PostgreSQL ran 60/60 responses on PgBouncer's backends" in by_name[name].evidence
    assert by_name["LISTEN/NOTIFY worker"].endpoint == "direct"
    assert by_name["LISTEN/NOTIFY worker"].figures == "3/3 notifications received"
    assert "[5/5] LISTEN/NOTIFY worker ... done in" in out.getvalue()
    report = io.StringIO()
    demo.report(steps, stream=report)
    assert standin.password not in out.getvalue() + report.getvalue()


def test_demo_with_database_url_set_starts_nothing(neon_local, monkeypatch, capsys):
    """With DATABASE_URL in the environment the demo uses it (as it would a real Neon string)."""
    demo = _demo()
    for key, value in neon_local.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(
        demo,
        "run",
        lambda target, **kw: [demo.Step("probe", endpoint=target.env["DATABASE_URL"][:13])],
    )
    assert demo.main() == 0
    out = capsys.readouterr().out
    assert (
        "Using the database in your environment" in out and "starting the local stand-in" not in out
    )
