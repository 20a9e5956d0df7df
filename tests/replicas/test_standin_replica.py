"""The stand-in's streaming replica: a real hot standby, its own PgBouncer, lag on demand."""

from __future__ import annotations

import io
import shlex
import uuid
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import psycopg
import pytest

from neon_connect import resolve
from neon_connect._replicas import measure_replica, resolve_replicas
from neon_connect.cli import main
from neon_local.processes import alive, read_pid
from neon_local.pytest_plugin import NeonLocal
from neon_local.replica import REPLICA_VAR, Replica

pytestmark = pytest.mark.integration


def _one(url: str, query: str) -> object:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return row[0]


def test_the_replica_is_a_hot_standby_behind_its_own_pgbouncer(caught_up: Replica) -> None:
    assert _one(caught_up.pooled_url, "SELECT pg_is_in_recovery()") is True
    # the pooled URL reaches the standby's PostgreSQL, through a PgBouncer in transaction mode
    assert _one(caught_up.pooled_url, "SELECT inet_server_port()") == caught_up.pg_port
    with psycopg.connect(caught_up.pooled_url, dbname="pgbouncer", autocommit=True) as conn:
        config = {row[0]: row[1] for row in conn.execute("SHOW CONFIG").fetchall()}
    assert config["pool_mode"] == "transaction"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        _one(caught_up.pooled_url, "CREATE TABLE nope (x int)")


def test_paused_replay_holds_the_replica_back_and_the_lag_is_measured(
    neon_local: NeonLocal, caught_up: Replica
) -> None:
    table = f"lag_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(neon_local.direct_url, autocommit=True) as primary:
        primary.execute(f"CREATE TABLE {table} (x int)")  # type: ignore[arg-type]
        caught_up.catch_up(neon_local.state.superuser_url)
        endpoints = resolve(env=neon_local.env())
        (endpoint,) = resolve_replicas(caught_up.pooled_url, primary=endpoints)
        with caught_up.lagging():
            primary.execute("SET synchronous_commit = on")  # the stand-in's default is off
            primary.execute(f"INSERT INTO {table} SELECT generate_series(1, 1000)")  # type: ignore[arg-type]
            status = measure_replica(endpoint, primary=endpoints.app)
            assert status.read_only is True
            assert status.lag_bytes is not None and status.lag_bytes > 0
            assert _one(caught_up.pooled_url, f"SELECT count(*) FROM {table}") == 0  # stale
            assert "read-only" in status.describe() and "bytes behind" in status.describe()
        caught_up.catch_up(neon_local.state.superuser_url)
        assert _one(caught_up.pooled_url, f"SELECT count(*) FROM {table}") == 1000
        primary.execute(f"DROP TABLE {table}")  # type: ignore[arg-type]


def test_the_primary_measured_as_a_replica_is_not_read_only(neon_local: NeonLocal) -> None:
    endpoints = resolve(env=neon_local.env())
    status = measure_replica(endpoints.app, primary=endpoints.app)
    assert status.read_only is False and "NOT read-only" in status.describe()


def test_an_unreachable_replica_is_reported_without_the_password(
    neon_local: NeonLocal, caught_up: Replica
) -> None:
    endpoints = resolve(env=neon_local.env())
    (endpoint,) = resolve_replicas(caught_up.pooled_url, primary=endpoints)
    caught_up.stop()
    try:
        status = measure_replica(endpoint, timeout=2)
    finally:
        caught_up.start()
    assert status.error and status.read_only is None
    assert "unreachable" in status.describe()
    assert neon_local.state.password not in status.describe()


def test_cli_local_up_with_replicas_exports_and_down_stops_them(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)  # the unprivileged server user must reach the folder when run as root
    folder = str(tmp_path / "state")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert main(["local", "up", "--dir", folder, "--replicas", "1"]) == 0
    try:
        exports = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in out.getvalue().splitlines()
        )
        assert set(exports) == {"DATABASE_URL", "DATABASE_URL_UNPOOLED", REPLICA_VAR}
        replica_url = exports[REPLICA_VAR]
        assert "," not in replica_url
        assert _one(replica_url, "SELECT pg_is_in_recovery()") is True
        assert "replica 1" in err.getvalue()
        assert exports["DATABASE_URL"].split("@")[0].split(":")[-1] not in err.getvalue()
        again = io.StringIO()
        with redirect_stdout(again):
            assert main(["local", "env", "--dir", folder]) == 0
        assert f"export {REPLICA_VAR}=" in again.getvalue()
        replica_dir = _runtime(folder)
        pid = read_pid(replica_dir / "data" / "postmaster.pid")
        assert alive(pid)
    finally:
        with redirect_stderr(io.StringIO()):
            assert main(["local", "down", "--dir", folder]) == 0
    assert not alive(pid)


def _runtime(folder: str) -> Path:
    import json

    state = json.loads((Path(folder) / "replicas.json").read_text())
    return Path(state[0]["runtime_dir"])
