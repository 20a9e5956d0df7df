"""``neon-connect check`` lists the replicas, whether each is read-only and its lag."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pytest

from neon_connect._check import run_check
from neon_connect.cli import main
from neon_local.pytest_plugin import NeonLocal
from neon_local.replica import REPLICA_VAR, Replica

pytestmark = pytest.mark.integration


def test_check_reports_each_replica_measured_on_the_server(
    neon_local: NeonLocal, caught_up: Replica
) -> None:
    report = run_check(env={**neon_local.env(), REPLICA_VAR: caught_up.pooled_url})
    (row,) = report.replicas
    assert row["source"] == REPLICA_VAR
    assert row["read_only"] is True and row["error"] is None
    assert isinstance(row["lag_bytes"], int)
    text = report.to_text()
    assert f"replica {REPLICA_VAR}: 127.0.0.1:{caught_up.pooler_port} read-only" in text
    assert neon_local.state.password not in text + report.to_json()


def test_check_cli_json_lists_replicas(
    neon_local: NeonLocal, caught_up: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {**neon_local.env(), REPLICA_VAR: caught_up.pooled_url}.items():
        monkeypatch.setenv(key, value)
    out = io.StringIO()
    with redirect_stdout(out):
        main(["check", "--json"])
    data = json.loads(out.getvalue())
    assert [r["read_only"] for r in data["replicas"]] == [True]
    assert neon_local.state.password not in out.getvalue()


def test_check_names_a_wrong_replica_variable_and_a_down_replica(
    neon_local: NeonLocal, caught_up: Replica
) -> None:
    wrong = run_check(env={**neon_local.env(), REPLICA_VAR: neon_local.direct_url})
    assert any(REPLICA_VAR in f.message and f.level == "error" for f in wrong.findings)
    caught_up.stop()
    try:
        down = run_check(env={**neon_local.env(), REPLICA_VAR: caught_up.pooled_url}, timeout=2)
    finally:
        caught_up.start()
    assert any("unreachable" in f.message for f in down.findings)
    assert down.replicas[0]["read_only"] is None


def test_check_without_replicas_lists_none(neon_local: NeonLocal) -> None:
    report = run_check(env=neon_local.env())
    assert report.replicas == [] and "replica" not in report.to_text()
