"""Issue 23, item 6: the small failures a newcomer met, each with its control."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy

from neon_connect import ConfigurationError, libpq_params, resolve
from neon_sqlalchemy import create_async_engine, create_engine
from tests.constants import SECRET
from tests.helpers import ROOT, run_python

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
OTHER = "ep-other-thing-654321.us-east-2.aws.neon.tech"
APP = f"postgresql://u:{SECRET}@{POOLED}/neondb"
MISMATCHED = f"postgresql://u:{SECRET}@{OTHER}/neondb"

# ---------------------------------------------------------------- asyncpg extra not installed

NO_ASYNCPG = """
import sys
sys.modules["asyncpg"] = None  # as if the extra were not installed
import neon_sqlalchemy._engines as engines
if sys.argv[1] == "control":
    engines._require_asyncpg = lambda: None  # the check taken out
try:
    engines.create_async_engine("postgresql://u:p@db.example.com/x", driver="asyncpg", env={})
except ImportError as exc:
    print(type(exc).__name__, "|", exc)
"""


def test_asyncpg_without_the_extra_names_the_install_command():
    result = run_python("-c", NO_ASYNCPG, "fixed")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ModuleNotFoundError |")
    assert 'pip install "neon-connect[asyncpg]"' in result.stdout
    assert "driver='asyncpg'" in result.stdout


def test_control_without_the_check_sqlalchemy_says_only_that_the_module_is_missing():
    result = run_python("-c", NO_ASYNCPG, "control")
    assert result.returncode == 0, result.stderr
    assert "ModuleNotFoundError" in result.stdout
    assert "pip install" not in result.stdout


# ---------------------------------------------------------------- alembic-init, existing dir


def test_alembic_init_on_an_existing_directory_is_one_line(tmp_path):
    args = ("-m", "neon_connect", "alembic-init", "migrations")
    assert run_python(*args, cwd=tmp_path).returncode == 0
    again = run_python(*args, cwd=tmp_path)
    assert again.returncode == 1
    assert "Traceback" not in again.stderr
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("neon-connect: error: migrations already exists and is not empty")
    assert "neon_sqlalchemy.alembic.configure(config)" in line


def test_control_alembic_itself_refuses_it_with_its_own_exception(tmp_path):
    """What the CLI printed as a 12-line traceback: Alembic's CommandError."""
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "env.py").write_text("")
    with pytest.raises(CommandError, match="not empty"):
        command.init(Config(str(tmp_path / "alembic.ini")), str(tmp_path / "migrations"))


# ---------------------------------------------------------------- alembic-init, no extra

NO_EXTRA = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if it were not installed
from neon_connect.cli import main
sys.exit(main(sys.argv[2:]))
"""
EXTRA = 'pip install "neon-connect[sqlalchemy]"'


@pytest.mark.parametrize("missing", ["sqlalchemy,alembic", "alembic"])
def test_alembic_init_without_the_sqlalchemy_extra_names_the_install_command(tmp_path, missing):
    result = run_python("-c", NO_EXTRA, missing, "alembic-init", "migrations", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("neon-connect alembic-init: ") and line.endswith(EXTRA), line
    assert list(tmp_path.iterdir()) == []


def test_control_an_import_error_inside_alembic_is_not_taken_for_the_missing_extra(tmp_path):
    """Alembic there, one of its own modules broken: not the extra, so not that message."""
    result = run_python("-c", NO_EXTRA, "alembic.util", "alembic-init", "migrations", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "alembic.util" in result.stderr
    assert EXTRA not in result.stderr


# ---------------------------------------------------------------- neon-connect check's text


def _check(*args: str, env: dict[str, str]):
    drop = ("DATABASE_URL", "POSTGRES_URL", "PG", "DIRECT_URL")
    return run_python("-m", "neon_connect", "check", *args, env=env, drop=drop, timeout=60)


def test_check_without_connecting_is_narrow_and_says_nothing_of_connecting():
    env = {"DATABASE_URL": APP + "?sslmode=require"}
    text = _check("--no-connect", env=env).stdout
    data = json.loads(_check("--no-connect", "--json", env=env).stdout)
    # the case is a wide one: a URL alone is longer than the limit
    assert max(len(e["url"]) for e in data["endpoints"]) > 100
    block = [line for line in text.splitlines() if line.startswith(("app ", "direct ", "  "))]
    assert block and max(len(line) for line in block) <= 100, text
    assert "connected" not in text
    assert "direct endpoint: direct, derived from DATABASE_URL" in text
    assert "from derived from" not in text
    assert SECRET not in text


def test_check_prints_each_connect_error_once():
    env = {
        "DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/neondb?sslmode=require&pgbouncer=true",
        "DATABASE_URL_UNPOOLED": "postgresql://u:pw@127.0.0.1:2/neondb?sslmode=require",
    }
    text = _check(env=env).stdout
    for port in (1, 2):
        assert text.count(f'"127.0.0.1", port {port} failed') == 1, text
    assert text.count("connected          no") == 2
    assert "PROBLEMS FOUND" in text


def test_messages_say_derived_from_not_from_derived_from():
    endpoints = resolve(APP, env={})
    direct = endpoints.session()
    assert direct.source == "derived from url argument"
    assert direct.origin == "derived from url argument"
    assert endpoints.app.origin == "from url argument"
    weak = resolve(APP + "?sslmode=disable", env={}).session()
    with pytest.raises(ConfigurationError) as info:
        libpq_params(weak)
    assert "(derived from url argument)" in str(info.value)
    assert "from derived from" not in str(info.value)


# ---------------------------------------------------------------- a pair as engine arguments


@pytest.mark.parametrize("factory", [create_engine, create_async_engine])
def test_a_mismatched_pair_as_arguments_is_refused_like_from_the_environment(factory):
    env_pair = {"DATABASE_URL": APP, "DATABASE_URL_UNPOOLED": MISMATCHED}
    with pytest.raises(ConfigurationError) as from_env:
        factory(env=env_pair)
    with pytest.raises(ConfigurationError) as from_args:
        factory(APP, direct_url=MISMATCHED, env={})
    assert "allow_mismatched_endpoints=True" in str(from_args.value)
    assert type(from_args.value) is type(from_env.value)
    assert SECRET not in str(from_args.value)
    engine = factory(
        APP, direct_url=MISMATCHED, env={}, allow_mismatched_endpoints=True, direct=True
    )
    sync = getattr(engine, "sync_engine", engine)
    assert sync.url.host == OTHER
    sync.dispose()


def test_control_before_direct_url_an_engine_argument_pair_never_reached_the_check():
    """SQLAlchemy's own factory has no such argument: it fails on the keyword, not the pair."""
    with pytest.raises(TypeError, match="direct_url"):
        sqlalchemy.create_engine("postgresql+psycopg://u@db.example.com/x", direct_url=MISMATCHED)


# ---------------------------------------------------------------- package metadata


def test_pyproject_carries_the_project_urls():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.urls]", 1)[1].split("\n[", 1)[0]
    urls = dict(re.findall(r'^(\w+) = "(https://[^"]+)"$', section, re.MULTILINE))
    assert set(urls) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}
    assert all(u.startswith("https://github.com/neon-connect/neon-connect") for u in urls.values())


# ---------------------------------------------------------------- sslpassword, ?ssl=require


def test_sslpassword_is_masked_in_the_repr_of_config_options(tmp_path):
    import neon_django

    key = tmp_path / "client.key"
    key.write_text("")
    url = f"postgresql://u:{SECRET}@db.example.com/x?sslmode=require&sslkey={key}"
    for settings in (
        neon_django.config(url + "&sslpassword=Kq7SslPass", env={}),
        neon_django.config(url, options={"sslpassword": "Kq7SslPass"}, env={}),
    ):
        assert "Kq7SslPass" not in repr(settings["OPTIONS"]) + repr(settings)
        assert str(settings["OPTIONS"]["sslpassword"]) == "Kq7SslPass"  # libpq gets it
        # the control: the same options as a plain dict show it
        assert "Kq7SslPass" in repr(dict(settings["OPTIONS"]))


@pytest.mark.integration
def test_asyncpg_ssl_habit_in_a_libpq_url_is_read_as_sslmode(neon_local, django_db_blocker):
    """``?ssl=require`` is translated to ``sslmode=require`` (a documented choice: the intent
    is clear), so every entry point connects with TLS; libpq alone rejects the key."""
    import psycopg

    import neon_django
    from tests.helpers import django_alias

    url = neon_local.state.direct_url.replace("sslmode=require", "ssl=require")
    assert "ssl=require" in url and "sslmode" not in url
    query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    engine = create_engine(url, env={})
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text(query)).scalar() is True
    engine.dispose()
    with (
        django_db_blocker.unblock(),
        django_alias("ssl_habit", neon_django.config(url, env={})) as db,
        db.cursor() as cursor,
    ):
        cursor.execute(query)
        assert cursor.fetchone()[0] is True
    # the control: libpq itself refuses the asyncpg spelling at connect
    with pytest.raises(psycopg.Error, match="ssl"):
        psycopg.connect(url)


KEYWORD_SSL = f"host={POOLED} user=u password={SECRET} dbname=neondb ssl=require"


def test_asyncpg_ssl_habit_in_a_key_value_string_names_sslmode():
    """The key=value form cannot be read as sslmode (libpq's parser refuses the key first):
    one error naming the variable and the fix."""
    with pytest.raises(ConfigurationError) as info:
        resolve(env={"DATABASE_URL": KEYWORD_SSL})
    message = str(info.value)
    assert message.startswith("DATABASE_URL sets ssl=")
    assert "sslmode=require" in message and SECRET not in message


def test_control_without_the_ssl_case_the_key_value_error_names_neither(monkeypatch):
    from neon_connect import _urls as urls

    monkeypatch.setattr(urls, "_sets_asyncpg_ssl", lambda text: False)
    with pytest.raises(ConfigurationError) as info:
        resolve(env={"DATABASE_URL": KEYWORD_SSL})
    assert "ssl=" not in str(info.value) and "sslmode=require" not in str(info.value)
