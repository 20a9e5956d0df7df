"""Which PgBouncer the stand-in runs, and Neon's settings on it.

The default is a PgBouncer >= 1.22 with ``max_prepared_statements=1000`` (what Neon runs);
``--pgbouncer`` / ``NEON_LOCAL_PGBOUNCER`` pick another, e.g. Debian 12's 1.18, which gets the
same file without the settings it does not know.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from neon_local import LocalNeon, PgBouncerTooOld, StandInError
from neon_local.binaries import NEON_PGBOUNCER, find_binaries, parse_version, version_of
from neon_local.configs import max_prepared_statements, pgbouncer_ini
from neon_local.pgbouncer_build import BUILD_PACKAGES, missing_tools
from tests.helpers import run_python

OLD_POOLER = "/usr/sbin/pgbouncer"  # Debian 12's PgBouncer 1.18 (apt package pgbouncer)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.24.1", (1, 24, 1)), ("1.18.0", (1, 18, 0)), ("1.22", (1, 22)), ("unknown", ())],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("version", "tracked"), [("1.18.0", 0), ("1.22.0", 1000), ("1.24.1", 1000)]
)
def test_neon_settings_only_where_pgbouncer_knows_them(tmp_path, version, tracked):
    ini = pgbouncer_ini(
        runtime=tmp_path,
        pg_port=5432,
        listen_port=6432,
        owner="neondb_owner",
        pool_size=3,
        prepared_statements=max_prepared_statements(version),
    )
    assert "pool_mode = transaction\n" in ini
    assert "max_client_conn = 10000\n" in ini and "query_wait_timeout = 120\n" in ini
    assert ("max_prepared_statements = 1000\n" in ini) is bool(tracked)


def test_default_pgbouncer_is_one_neon_runs(monkeypatch):
    """What ``make test`` runs on: scripts/ensure-system-deps provides a PgBouncer >= 1.22."""
    monkeypatch.delenv("NEON_LOCAL_PGBOUNCER", raising=False)
    assert parse_version(version_of(find_binaries().pgbouncer)) >= NEON_PGBOUNCER


def test_running_pooler_has_neons_settings(neon_local):
    config = {row["key"]: row["value"] for row in neon_local.show("CONFIG")}
    assert config["pool_mode"] == "transaction"
    assert config["max_client_conn"] == "10000"
    assert config["query_wait_timeout"] == "120"
    assert config["default_pool_size"] == str(neon_local.pool_size)
    if neon_local.tracks_prepared_statements:
        assert parse_version(neon_local.pgbouncer_version) >= NEON_PGBOUNCER
        assert config["max_prepared_statements"] == "1000"
    else:
        assert parse_version(neon_local.pgbouncer_version) < NEON_PGBOUNCER
        assert "max_prepared_statements" not in config


def test_a_pgbouncer_that_is_not_there_is_one_clear_line(tmp_path):
    with pytest.raises(StandInError, match="NEON_LOCAL_PGBOUNCER.*not an executable file"):
        LocalNeon(tmp_path / "x", pgbouncer=tmp_path / "no-pgbouncer").up()
    assert not (tmp_path / "x").exists()


def test_cli_up_with_the_old_pooler_names_its_version(tmp_path):
    cli = ("-m", "neon_local")
    os.chmod(tmp_path, 0o755)
    folder = str(tmp_path / "old")
    up = run_python(*cli, "up", "--dir", folder, "--pool-size", "2", "--pgbouncer", OLD_POOLER)
    try:
        assert up.returncode == 0, up.stderr
        assert "PgBouncer 1.18" in up.stderr and "max_prepared_statements 0" in up.stderr
        text = run_python(*cli, "status", "--dir", folder)
        assert "(PgBouncer 1.18" in text.stdout and "(PostgreSQL " in text.stdout
        status = json.loads(run_python(*cli, "status", "--dir", folder, "--json").stdout)
        assert status["running"] and status["max_prepared_statements"] == 0
        assert status["pgbouncer_version"] == version_of(
            find_binaries(pgbouncer=OLD_POOLER).pgbouncer
        )
    finally:
        assert run_python(*cli, "down", "--dir", folder).returncode == 0


# -- a machine with only an old PgBouncer (a wheel install on Debian 12) ---------------------


def _only_the_old_pooler(tmp_path) -> dict[str, str]:
    """Debian 12 from a wheel: no cached build, no PgBouncer on the PATH but 1.18 in
    /usr/sbin, openssl, and no C compiler (the PATH holds only openssl)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "openssl").symlink_to("/usr/bin/openssl")
    return {
        "PATH": str(bin_dir),
        "NEON_CONNECT_CACHE": str(tmp_path / "empty-cache"),
        "NEON_LOCAL_PGBOUNCER": "",
    }


def test_an_old_pgbouncer_found_is_refused_with_the_fix(tmp_path, monkeypatch):
    for name, value in _only_the_old_pooler(tmp_path).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(PgBouncerTooOld) as refused:
        LocalNeon(tmp_path / "x").up()
    message = str(refused.value)
    assert f"found {version_of(Path(OLD_POOLER))} at {OLD_POOLER}" in message
    assert "needs PgBouncer >= 1.22" in message and "neon-local up" in message
    assert "NEON_LOCAL_PGBOUNCER" in message
    assert not (tmp_path / "x").exists()


def test_cli_up_without_build_tools_exits_non_zero_with_the_apt_line(tmp_path):
    """Before: exit 0 on 1.18, silently. Now: one line naming what to install."""
    os.chmod(tmp_path, 0o755)
    up = run_python(
        "-m", "neon_local", "up", "--dir", str(tmp_path / "s"),
        env=_only_the_old_pooler(tmp_path),
    )  # fmt: skip
    assert up.returncode == 1, up.stderr
    assert "building one" in up.stderr
    assert "cannot build PgBouncer 1.24.1: missing cc, make, pkg-config" in up.stderr
    assert f"sudo apt-get install -y {BUILD_PACKAGES}" in up.stderr
    assert "Traceback" not in up.stderr and not up.stdout


def test_control_an_explicit_old_pgbouncer_still_runs_and_is_named(tmp_path):
    """The old pooler on purpose (the matrix's old_pooler session): it starts, with a warning."""
    os.chmod(tmp_path, 0o755)
    env = {"NEON_CONNECT_CACHE": str(tmp_path / "empty-cache"), "NEON_LOCAL_PGBOUNCER": OLD_POOLER}
    folder = str(tmp_path / "s")
    up = run_python("-m", "neon_local", "up", "--dir", folder, env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "warning: PgBouncer 1.18" in up.stderr and "older than Neon's" in up.stderr
    finally:
        assert run_python("-m", "neon_local", "down", "--dir", folder).returncode == 0


def test_cli_up_builds_the_neon_like_pgbouncer_itself(tmp_path):
    """From Debian's source tarball, checked against its SHA-256, with progress lines."""
    assert not missing_tools(), "scripts/ensure-system-deps installs the build tools"
    os.chmod(tmp_path, 0o755)
    cache = tmp_path / "cache"
    env = {"NEON_CONNECT_CACHE": str(cache), "NEON_LOCAL_PGBOUNCER": ""}
    folder = str(tmp_path / "s")
    up = run_python("-m", "neon_local", "up", "--dir", folder, env=env, timeout=600)
    try:
        assert up.returncode == 0, up.stderr
        for line in ("downloading PgBouncer 1.24.1", "compiling", "built "):
            assert line in up.stderr
        state = LocalNeon(folder).state()
        assert state is not None and state.pgbouncer_version == "1.24.1"
        assert state.max_prepared_statements == 1000
        built = cache / "pgbouncer-1.24.1" / "bin" / "pgbouncer"
        assert version_of(built) == "1.24.1"  # (it runs from a copy when root's cache is closed)
    finally:
        assert run_python("-m", "neon_local", "down", "--dir", folder).returncode == 0
