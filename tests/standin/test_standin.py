"""The stand-in itself: TLS + SCRAM only, really pooled, and robust to restarts."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import psycopg
import pytest

from neon_local import LocalNeon, StandInError
from neon_local.processes import wait_dead as _wait_dead
from neon_local.standin import _pgbouncer_pid
from tests.constants import SECRET
from tests.helpers import run_python

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("which", ["pooled_url", "direct_url"])
def test_tls_and_scram_only(neon_local, which):
    url = getattr(neon_local, which)
    with psycopg.connect(url) as conn:
        assert conn.info.pgconn.ssl_in_use
    with pytest.raises(psycopg.OperationalError, match="SSL required|no encryption|insecure"):
        psycopg.connect(url.replace("sslmode=require", "sslmode=disable"))
    wrong = url.replace(neon_local.state.password, SECRET)
    with pytest.raises(psycopg.OperationalError, match="(password|SASL) authentication failed"):
        psycopg.connect(wrong)


def test_scram_is_the_password_method(neon_local):
    with neon_local.superuser() as su:
        row = su.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'neondb_owner'"
        ).fetchone()
    assert row[0].startswith("SCRAM-SHA-256$")


def test_pooled_queries_pass_through_pgbouncer_and_direct_ones_do_not(neon_local):
    before = neon_local.pooler_transactions()
    with psycopg.connect(neon_local.direct_url) as conn:
        conn.execute("SELECT 1")
    assert neon_local.pooler_transactions() == before
    with psycopg.connect(neon_local.pooled_url) as conn:
        conn.execute("SELECT 1")
    assert neon_local.pooler_transactions() > before


def test_many_clients_share_the_pool(neon_local):
    clients = 4 * neon_local.pool_size + 2
    barrier = threading.Barrier(clients)
    pids: set[int] = set()
    errors: list[BaseException] = []

    def client():
        try:
            with psycopg.connect(neon_local.pooled_url, autocommit=True) as conn:
                barrier.wait(timeout=20)
                for _ in range(5):
                    pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(pids) <= neon_local.pool_size
    servers = [s for s in neon_local.show("SERVERS") if s["database"] == "neondb"]
    assert len(servers) <= neon_local.pool_size


def test_admin_console_pause_and_resume(neon_local):
    with neon_local.admin() as admin:
        admin.execute("PAUSE neondb")
        admin.execute("RESUME neondb")
    assert any(p["database"] == "neondb" for p in neon_local.show("POOLS"))


def test_up_twice_down_and_recovery_from_a_killed_pair(tmp_path):
    folder = tmp_path / "state"
    os.chmod(tmp_path, 0o755)
    local = LocalNeon(folder, pool_size=2, max_connections=20)
    first = local.up()
    try:
        assert local.up() == first  # a second up does not start a second pair
        with psycopg.connect(first.pooled_url) as conn:
            conn.execute("SELECT 1")
        victim = _pgbouncer_pid(first)
        os.kill(victim, signal.SIGKILL)  # a killed run leaves the folder behind
        assert _wait_dead(victim, 10)
        assert not local.status()["running"]
        second = local.up()
        assert second.password != first.password
        with psycopg.connect(second.pooled_url) as conn:
            conn.execute("SELECT 1")
    finally:
        assert local.down()
    assert not folder.exists()
    assert local.status() == {
        "running": False,
        "postgres": False,
        "pgbouncer": False,
        "proxy": False,
        "directory": str(folder),
    }


def test_busy_port_is_one_clear_line(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(
            StandInError,
            match=f"port {port} on 127.0.0.1 is busy; choose another with --pooler-port",
        ):
            LocalNeon(tmp_path / "x", pooler_port=port).up()


def test_missing_binaries_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("NEON_LOCAL_PGBOUNCER", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("NEON_CONNECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)
    with pytest.raises(StandInError, match="missing .*openssl.*apt-get install -y postgresql"):
        LocalNeon(tmp_path / "x").up()


def test_cli_round_trip_masks_passwords_except_exports(tmp_path):
    cli = ("-m", "neon_local")
    os.chmod(tmp_path, 0o755)
    folder = str(tmp_path / "cli")
    up = run_python(*cli, "up", "--dir", folder, "--pool-size", "2")
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        assert set(exports) == {"DATABASE_URL", "DATABASE_URL_UNPOOLED"}
        password = exports["DATABASE_URL"].split(":")[2].split("@")[0]
        assert password not in up.stderr
        status = run_python(*cli, "status", "--dir", folder)
        assert (
            status.returncode == 0 and "running" in status.stdout and password not in status.stdout
        )
        env = run_python(*cli, "env", "--dir", folder)
        assert env.stdout == up.stdout
    finally:
        down = run_python(*cli, "down", "--dir", folder)
    assert down.returncode == 0
    status = run_python(*cli, "status", "--dir", folder)
    assert status.returncode == 3 and "not running" in status.stdout


def test_the_state_folder_is_ignored_by_git_and_owner_only(tmp_path):
    """It holds passwords (state.json, userlist.txt) and a private key."""
    import subprocess

    os.chmod(tmp_path, 0o755)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    folder = tmp_path / ".neon-local"
    local = LocalNeon(folder, pool_size=2, max_connections=20)
    state = local.up()
    try:
        untracked = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=tmp_path, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert untracked == "", untracked
        assert (folder.stat().st_mode & 0o777) == 0o700
        runtime = Path(state.runtime_dir)
        for secret_file in (
            folder / "state.json",
            runtime / "userlist.txt",
            runtime / "server.key",
        ):
            assert (secret_file.stat().st_mode & 0o077) == 0, secret_file
    finally:
        local.down()


def test_extra_databases_on_both_endpoints(tmp_path):
    """One for Alembic beside Django's neondb, so autogenerate never sees the other's tables."""
    os.chmod(tmp_path, 0o755)
    folder = str(tmp_path / "s")
    cli = ("-m", "neon_local")
    up = run_python(*cli, "up", "--dir", folder, "--pool-size", "2", "--database", "analytics")
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines()
        )
        assert set(exports) == {
            "DATABASE_URL", "DATABASE_URL_UNPOOLED",
            "DATABASE_URL_ANALYTICS", "DATABASE_URL_ANALYTICS_UNPOOLED",
        }  # fmt: skip
        for var in ("DATABASE_URL_ANALYTICS", "DATABASE_URL_ANALYTICS_UNPOOLED"):
            with psycopg.connect(exports[var].strip("'")) as conn:
                assert conn.execute("SELECT current_database()").fetchone() == ("analytics",)
        again = run_python(*cli, "up", "--dir", folder, "--database", "reports")
        assert again.returncode == 0 and "DATABASE_URL_REPORTS_UNPOOLED" in again.stdout
        assert "DATABASE_URL_ANALYTICS=" in again.stdout  # what was there stays
        state = LocalNeon(folder).state()
        assert state is not None and state.databases == ("analytics", "reports")
        with psycopg.connect(state.url_for("reports")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("reports",)
    finally:
        assert run_python(*cli, "down", "--dir", folder).returncode == 0


@pytest.mark.parametrize("name", ["Analytics", "neondb", "replica", "a-b", ""])
def test_a_database_name_that_cannot_be_a_variable_is_refused(tmp_path, name):
    with pytest.raises(StandInError, match="--database .*DATABASE_URL_<NAME>"):
        LocalNeon(tmp_path / "x", databases=[name])
    assert not (tmp_path / "x").exists()


def test_no_printer_shows_the_passwords(neon_local):
    """hypothesis prints a failing example's fixtures field by field, as IPython does, where a
    class does not print itself: the stand-in's passwords appeared in a failure's report."""
    from hypothesis.vendor.pretty import pretty

    state = neon_local.state
    for shown in (repr(state), repr(neon_local), pretty(state), pretty(neon_local)):
        assert state.password not in shown and state.superuser_password not in shown
        assert str(state.pooler_port) in shown
