"""neon-connect check and manage.py neon_check."""

from __future__ import annotations

import json

import pytest

from neon_connect._check import FINDING_IDS, run_check
from tests.constants import SECRET
from tests.helpers import ROOT, run_python

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"


def _cli(*args, env):
    drop = ("DATABASE_URL", "POSTGRES_URL", "PG", "DIRECT_URL")
    return run_python("-m", "neon_connect", *args, env=env, drop=drop, timeout=60)


@pytest.mark.integration
def test_check_against_the_stand_in(neon_local):
    report = run_check(env=neon_local.env())
    assert report.ok
    app, direct = report.endpoints
    assert (app.kind, app.source, app.connected, app.behaves_as_transaction_pooler) == (
        "pooled",
        "DATABASE_URL",
        True,
        True,
    )
    assert (direct.kind, direct.source, direct.connected) == (
        "direct",
        "DATABASE_URL_UNPOOLED",
        True,
    )
    assert app.tls and app.tls.startswith("TLS") and direct.tls and direct.tls.startswith("TLS")
    assert app.max_connections == direct.max_connections == 60
    assert app.server_version and app.connect_ms and app.round_trip_ms is not None
    # measured by the probe, so it follows the pooler the suite runs on (1.24 tracks, 1.18 not)
    assert app.tracks_prepared_statements is neon_local.tracks_prepared_statements
    assert direct.tracks_prepared_statements is None
    assert "tracks prepares" in report.to_text()


@pytest.mark.integration
def test_cli_table_and_json_never_show_the_password(neon_local):
    table = _cli("check", env=neon_local.env())
    assert table.returncode == 0, table.stderr
    assert "transaction pooler" in table.stdout and "OK" in table.stdout
    data = json.loads(_cli("check", "--json", env=neon_local.env()).stdout)
    assert data["ok"] is True and len(data["endpoints"]) == 2
    for text in (table.stdout, table.stderr, json.dumps(data)):
        assert neon_local.state.password not in text


def test_nothing_configured_is_clear():
    result = _cli("check", env={})
    assert result.returncode == 2
    assert (
        "No database connection string found" in result.stdout and "DATABASE_URL" in result.stdout
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        (
            {"DATABASE_URL": f"postgresql://u:{SECRET}@bouncer:6432/db?pgbouncer=true"},
            "Migrations would run through the pooler",
        ),
        (
            {"DATABASE_URL": f"postgresql://u:{SECRET}@{POOLED}/db?options=-c%20search_path%3Dx"},
            "'options'",
        ),
        (
            {"DATABASE_URL": f"postgresql://u:{SECRET}@{POOLED}/db?sslmode=disable"},
            "Neon requires TLS",
        ),
        (
            {"DATABASE_URL": f"postgresql://u:{SECRET}@db.internal/db?connect_timeout=2"},
            "shorter than a Neon cold start",
        ),
        ({"DATABASE_URL": f"postgresql://u:{SECRET}@db.internal/db"}, "does not require TLS"),
    ],
)
def test_pitfalls_are_flagged_with_a_fix(env, fragment):
    result = _cli("check", "--no-connect", env=env)
    assert fragment in result.stdout
    assert "fix:" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    findings = json.loads(_cli("check", "--no-connect", "--json", env=env).stdout)["findings"]
    assert findings and {f["id"] for f in findings} <= set(FINDING_IDS)
    assert "configuration" not in {f["id"] for f in findings}  # a rule's refusal keeps its id


def test_a_refused_endpoint_is_an_error_with_a_fix():
    result = _cli(
        "check", env={"DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/db?connect_timeout=5"}
    )
    assert result.returncode == 1
    assert "connection refused" in result.stdout.lower() and "check host and port" in result.stdout
    assert SECRET not in result.stdout


@pytest.mark.integration
def test_manage_py_neon_check(neon_local):
    env = {**neon_local.env(), "DJANGO_SETTINGS_MODULE": "shop.settings"}
    result = run_python(
        "manage.py", "neon_check", "--json", env=env, cwd=ROOT / "example_projects" / "django_app"
    )
    assert result.returncode == 0, result.stderr + result.stdout
    data = json.loads(result.stdout)
    assert data["ok"] and [e["kind"] for e in data["endpoints"]] == ["pooled", "direct"]
    assert [e["source"] for e in data["endpoints"]] == [
        "DATABASES['default']",
        "DATABASES['default']['NEON']['DIRECT']",
    ]
    assert neon_local.state.password not in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "code", "fragment"),
    [
        # malformed: the libpq line is still right, the error names the variable
        ((), {"DATABASE_URL": f"postgresql://u:ab@cd/{SECRET}@{POOLED}/db"}, 1, "DATABASE_URL"),
        ((), {"DATABASE_URL": f"'postgresql://u:{SECRET}@{POOLED}/db'"}, 1, "quotes"),
        ((), {}, 2, "No database connection string"),
        (("--url", f"postgresql://u:{SECRET}@{POOLED}/db?sslmode=req"), {}, 1, "sslmode"),
        (
            ("--url", f"postgresql://u:{SECRET}@{POOLED}/db"),
            {"DATABASE_URL_UNPOOLED": "ignored: the url argument wins"},
            0,
            POOLED,
        ),
        (("--bogus-flag",), {}, 2, "arguments"),
    ],
)
def test_check_never_prints_a_traceback_and_json_is_always_json(args, env, code, fragment):
    for json_flag in ((), ("--json",)):
        result = _cli("check", "--no-connect", *json_flag, *args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == code, output
        assert "Traceback" not in output
        assert SECRET not in output and SECRET[:8] not in output
        assert fragment in output
        if json_flag:
            report = json.loads(result.stdout)
            assert report["ok"] is (code == 0)
            assert (report["error"] is None) is (code == 0)
        elif code != 2 or not args:
            assert "libpq" in result.stdout


@pytest.mark.parametrize(
    ("error", "named"),
    [
        ("query_wait_timeout", "stayed busy for query_wait_timeout"),
        ("cannot execute INSERT in a read-only transaction", "default_transaction_read_only"),
        ("connection timeout expired", "raise connect_timeout"),
    ],
)
def test_check_names_the_cause_of_pooler_errors(error, named):
    from neon_connect._check import _fix_for

    assert named in _fix_for(error)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "no platform detected (a long-running server)"),
        ({"K_SERVICE": "web"}, "Google Cloud Run (K_SERVICE), elastic"),
        ({"K_SERVICE": "fn", "FUNCTION_TARGET": "main"}, "Cloud Run functions (FUNCTION_TARGET)"),
        ({"AWS_LAMBDA_FUNCTION_NAME": "f"}, "AWS Lambda (AWS_LAMBDA_FUNCTION_NAME), function"),
        ({"DYNO": "web.1"}, "Heroku (DYNO), server"),
    ],
)
def test_check_prints_the_platform_and_what_it_chose(env, said):
    from neon_connect._check import run_check

    url = "postgresql://u:p@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
    report = run_check(env={"DATABASE_URL": url, **env}, connect=False)
    assert said in (report.platform or "")
    assert f"platform {report.platform}" in report.to_text()
