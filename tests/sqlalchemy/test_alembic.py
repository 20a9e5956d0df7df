"""Alembic through neon_sqlalchemy.alembic: direct endpoint, one-line env.py, concurrent runs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from alembic.config import Config

import neon_sqlalchemy.alembic as neon_alembic
from neon_connect import ConfigurationError
from tests.helpers import ROOT, run_python, start_python

pytestmark = pytest.mark.integration

MIGRATION = '''
"""create widgets (slowly, so that concurrent runs overlap)"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT pg_sleep(1.5)")
    op.create_table("widgets_{suffix}", sa.Column("id", sa.Integer, primary_key=True))


def downgrade():
    op.drop_table("widgets_{suffix}")
'''


METADATA = """
import sqlalchemy as sa

target_metadata = sa.MetaData()
sa.Table("widgets_{suffix}", target_metadata, sa.Column("id", sa.Integer, primary_key=True))
"""


def _project(tmp_path: Path, suffix: str, template: str = "generic") -> Path:
    ini = tmp_path / "alembic.ini"
    env_py = neon_alembic.init(tmp_path / "migrations", ini=ini, template=template)
    env_py.write_text(
        env_py.read_text().replace("target_metadata = None\n", METADATA.format(suffix=suffix))
    )
    (tmp_path / "migrations" / "versions" / "0001_widgets.py").write_text(
        MIGRATION.format(suffix=suffix)
    )
    return ini


@pytest.fixture
def own_database(neon_local, request):
    """A database of this test's own (migrations leave an alembic_version table behind)."""
    name = "alembic_" + request.node.name.removeprefix("test_")[:40]
    with neon_local.superuser() as su:
        su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        su.execute(f"CREATE DATABASE {name} OWNER neondb_owner")
    env = {k: v.replace("/neondb?", f"/{name}?") for k, v in neon_local.env().items()}
    yield name, env
    with neon_local.superuser() as su:
        su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _alembic(ini: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return start_python("-m", "alembic", "-c", str(ini), *args, env=env, cwd=ini.parent)


def _run(ini, *args, env):
    result = run_python("-m", "alembic", "-c", str(ini), *args, env=env, cwd=ini.parent)
    return result.returncode, result.stdout, result.stderr


def _version(env, suffix):
    with psycopg.connect(env["DATABASE_URL_UNPOOLED"]) as conn:
        exists = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"widgets_{suffix}",)
        ).fetchone()[0]
        version = (
            conn.execute("SELECT version_num FROM alembic_version").fetchone() if exists else None
        )
    return exists, version


def test_init_writes_a_stock_env_py_with_one_added_line(tmp_path):
    _project(tmp_path, "x")
    env_py = (tmp_path / "migrations" / "env.py").read_text()
    assert env_py.count(neon_alembic.ENV_LINE) == 1
    assert "def run_migrations_offline" in env_py and "def run_migrations_online" in env_py
    assert "engine_from_config" in env_py  # the stock shape is untouched


@pytest.mark.parametrize("template", ["generic", "async"])
def test_the_written_env_py_passes_the_projects_linter(tmp_path, template):
    """Lint under this project's ruff settings; format at the width of Alembic's templates."""
    env_py = neon_alembic.init(tmp_path / "m", ini=tmp_path / "alembic.ini", template=template)
    config = str(ROOT / "pyproject.toml")
    lint = run_python("-m", "ruff", "check", "--config", config, str(env_py))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = ("-m", "ruff", "format", "--check", "--config", config, "--line-length", "79")
    formatted = run_python(*fmt, str(env_py))
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_upgrade_current_check_and_downgrade_run_direct(tmp_path, neon_local, own_database):
    name, env = own_database
    ini = _project(tmp_path, "direct")
    before = neon_local.pooler_transactions(name)
    code, out, err = _run(ini, "upgrade", "head", env=env)
    assert code == 0, err
    assert _version(env, "direct") == (True, ("0001",))
    code, out, err = _run(ini, "current", env=env)
    assert code == 0 and "0001" in out, err
    code, out, err = _run(ini, "check", env=env)
    assert code == 0 and "No new upgrade operations detected" in out + err, err
    code, out, err = _run(ini, "downgrade", "base", env=env)
    assert code == 0, err
    assert _version(env, "direct")[0] is False
    assert neon_local.pooler_transactions(name) == before == 0  # PgBouncer forwarded none of it


def test_the_migration_connection_is_seen_by_postgres_as_a_direct_client(
    tmp_path, neon_local, own_database
):
    """While an upgrade runs, pg_stat_activity shows its backend, reached without PgBouncer."""
    name, env = own_database
    ini = _project(tmp_path, "seen")
    proc = _alembic(ini, "upgrade", "head", env=env)
    try:
        deadline = time.monotonic() + 20
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = [r for r in neon_local.activity(name) if r["query"] and "pg_sleep" in r["query"]]
            time.sleep(0.1)
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert rows, "the migration never showed up in pg_stat_activity"
    # A direct client's port is its own; PgBouncer's server connections are listed in SHOW SERVERS.
    pooler_ports = {int(s["local_port"]) for s in neon_local.show("SERVERS") if s.get("local_port")}
    assert rows[0]["client_port"] not in pooler_ports


def test_two_concurrent_upgrades_one_applies_the_other_waits(tmp_path, neon_local, own_database):
    name, env = own_database
    ini = _project(tmp_path, "race")
    first = _alembic(ini, "upgrade", "head", env=env)
    time.sleep(0.3)
    second = _alembic(ini, "upgrade", "head", env=env)
    results = [(p.wait(120), p.communicate()) for p in (first, second)]
    assert [code for code, _ in results] == [0, 0], [err for _, (_, err) in results]
    applied = [err for _, (_, err) in results if "Running upgrade  -> 0001" in err]
    assert len(applied) == 1  # the second found the head already there
    assert _version(env, "race") == (True, ("0001",))
    with neon_local.superuser() as su:
        assert (
            su.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
            == 0
        )


def test_without_the_helper_concurrent_upgrades_through_the_pooler_collide(
    tmp_path, neon_local, own_database
):
    """The control: the stock env.py on the pooled URL, no lock: both runs try to apply."""
    ini = tmp_path / "alembic.ini"
    from alembic import command

    command.init(Config(str(ini)), str(tmp_path / "migrations"))
    (tmp_path / "migrations" / "versions" / "0001_widgets.py").write_text(
        MIGRATION.format(suffix="plain")
    )
    url = (
        own_database[1]["DATABASE_URL"]
        .replace("postgresql://", "postgresql+psycopg://")
        .replace("%", "%%")
    )
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname", url))
    first = _alembic(ini, "upgrade", "head", env={})
    time.sleep(0.3)
    second = _alembic(ini, "upgrade", "head", env={})
    codes = [p.wait(120) for p in (first, second)]
    errors = "".join(p.communicate()[1] for p in (first, second))
    assert codes.count(0) < 2, "both runs claimed success"
    assert "already exists" in errors or "duplicate key" in errors


def test_percent_in_the_password_survives_config_interpolation(tmp_path, neon_local):
    password = "pa%ss%25w@rd:/?#"
    with neon_local.superuser() as su:
        su.execute("DROP ROLE IF EXISTS percent_user")
        su.execute(f"CREATE ROLE percent_user LOGIN PASSWORD '{password}' IN ROLE neondb_owner")
    from urllib.parse import quote

    url = neon_local.direct_url.replace(
        "neondb_owner:" + neon_local.state.password, "percent_user:" + quote(password, safe="")
    )
    config = Config()
    value = neon_alembic.configure(config, url=url)
    assert config.get_main_option("sqlalchemy.url") == value  # interpolation undone exactly
    with psycopg.connect(
        value.replace("postgresql+psycopg://", "postgresql://").split("&plugin")[0]
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("percent_user",)


def test_offline_sql_mode_uses_the_direct_url(tmp_path, neon_local, own_database):
    ini = _project(tmp_path, "offline")
    code, out, err = _run(ini, "upgrade", "head", "--sql", env=own_database[1])
    assert code == 0, err
    assert "CREATE TABLE widgets_offline" in out


def test_async_template_runs_direct(tmp_path, neon_local, own_database):
    name, env = own_database
    ini = _project(tmp_path, "asynctpl", template="async")
    code, out, err = _run(ini, "upgrade", "head", env=env)
    assert code == 0, err
    assert _version(env, "asynctpl")[0] is True
    assert neon_local.pooler_transactions(name) == 0


def test_the_plugin_labels_the_endpoint_it_really_connects_to():
    from sqlalchemy.engine import make_url

    from neon_sqlalchemy.plugin import endpoint_of

    direct = endpoint_of(
        make_url("postgresql+psycopg://u:p@ep-cool-darkness-123456.us-east-2.aws.neon.tech/db")
    )
    assert (direct.kind, direct.host) == (
        "direct",
        "ep-cool-darkness-123456.us-east-2.aws.neon.tech",
    )
    pooled = endpoint_of(
        make_url(
            "postgresql+psycopg://u:p@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/db"
        )
    )
    assert pooled.kind == "pooled"


def test_no_url_anywhere_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="Alembic: No database connection string found"):
        neon_alembic.configure(Config(), env={})


def test_the_plugin_uses_the_endpoint_configure_resolved(neon_local, monkeypatch):
    """One resolution, carried: the engine env.py builds from configure()'s URL gets the
    endpoint configure() resolved, with no second parse of the URL (and its password)."""
    import sqlalchemy as sa

    import neon_sqlalchemy.plugin as plugin

    config = Config()
    url = neon_alembic.configure(config, env=neon_local.env())
    assert "neon_endpoint=" in url

    def resolve_again(*args, **kwargs):
        raise AssertionError("the plugin resolved the URL again")

    monkeypatch.setattr(plugin, "resolve", resolve_again)
    engine = sa.engine_from_config(config.get_section(config.config_ini_section, {}))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert "neon_endpoint" not in engine.url.query  # not sent to the server
    finally:
        engine.dispose()
    # the control: a URL written by hand with the plugin alone is resolved by the plugin
    by_hand = sa.make_url(url).difference_update_query(["neon_endpoint"])
    with pytest.raises(AssertionError, match="resolved the URL again"):
        sa.create_engine(by_hand)
