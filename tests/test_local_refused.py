"""Connection refused on this machine fails fast, with a hint (issue 23, item 4).

A stopped stand-in or a wrong port used to cost the whole retry budget (20 s: 17 retry lines
in Django's migrate, 21.8 s of silence in SQLAlchemy). A host on this machine that refuses
is retried only for ``RetryPolicy.local_refused_timeout`` (1.5 s, enough for a local pooler
or server restart), then fails naming ``neon-local status``. Remote hosts keep the
full retry. Every connect below is a real driver connect to a real closed port.
"""

from __future__ import annotations

import json
import logging

import psycopg
import pytest
import sqlalchemy

import neon_connect
from neon_connect import RetryPolicy, Secret, resolve
from neon_connect import _retry as retry
from neon_connect._retry import is_local_host, is_local_refusal
from neon_sqlalchemy import create_engine
from tests.constants import SECRET
from tests.helpers import closed_local_port, run_python

HINT = "neon-local status"
# Retries that fit in local_refused_timeout (1.5 s) whatever the jitter: each delay is at
# least half its nominal value (0.05, 0.1, 0.2, 0.4, 0.8 s), so a fifth retry would start
# after 1.55 s.
MAX_LOCAL_RETRIES = 4


def _url(host: str = "127.0.0.1", port: int | None = None, scheme: str = "postgresql") -> str:
    return f"{scheme}://u:{SECRET}@{host}:{port or closed_local_port()}/neondb?sslmode=require"


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "; retry " in r.getMessage()]


def _refused_error() -> psycopg.OperationalError:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(_url(), connect_timeout=5)
    return info.value


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("db.localhost", True),
        ("/var/run/postgresql", True),
        ("ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech", False),
        ("10.0.0.5", False),
        ("db.example.com", False),
    ],
)
def test_what_counts_as_this_machine(host, local):
    assert is_local_host(host) is local


def test_a_refusal_is_local_only_on_this_machine():
    refused = _refused_error()  # libpq's own words for a closed local port
    assert is_local_refusal(refused, resolve(_url()).app)
    assert is_local_refusal(ConnectionRefusedError(111, "Connect call failed"), resolve(_url()).app)
    remote = resolve(_url(host="db.example.com", port=5432)).app
    assert not is_local_refusal(refused, remote)  # a remote host keeps the full retry
    assert not is_local_refusal(psycopg.OperationalError("timeout expired"), resolve(_url()).app)


@pytest.mark.integration
def test_a_local_address_that_answered_before_keeps_the_full_retry(neon_local):
    """A pooler restarting under a running app refuses for a moment: that is no stopped
    stand-in. Found by the Django resilience test (a PgBouncer restart under load)."""
    endpoint = resolve(env=neon_local.env()).app
    refused = ConnectionRefusedError(111, "Connect call failed")
    RetryPolicy().call(
        lambda: psycopg.connect(neon_local.pooled_url, connect_timeout=5).close(),
        endpoint=endpoint,
    )
    assert not is_local_refusal(refused, endpoint)
    assert is_local_refusal(refused, resolve(_url()).app)  # control: one that never answered


def test_a_closed_local_port_fails_without_retrying_past_the_local_budget(caplog):
    policy = RetryPolicy(timeout=20.0, local_refused_timeout=0.0)
    with (
        caplog.at_level(logging.WARNING, logger="neon_connect"),
        pytest.raises(psycopg.OperationalError) as info,
    ):
        neon_connect.connect(Secret(_url()), retry=policy)
    assert _retry_lines(caplog) == []  # one attempt: no retry at all
    notes = "\n".join(info.value.__notes__)
    assert HINT in notes and "nothing listens at 127.0.0.1:" in notes
    assert SECRET not in notes


def test_control_without_the_local_classification_a_closed_port_is_retried(caplog, monkeypatch):
    monkeypatch.setattr(retry, "is_local_refusal", lambda exc, endpoint: False)
    policy = RetryPolicy(timeout=1.0, local_refused_timeout=0.0)
    with (
        caplog.at_level(logging.WARNING, logger="neon_connect"),
        pytest.raises(psycopg.OperationalError) as info,
    ):
        neon_connect.connect(Secret(_url()), retry=policy)
    assert len(_retry_lines(caplog)) >= 1  # the first delay (<= 0.1 s) fits in 1 s
    assert HINT not in "\n".join(info.value.__notes__)


def test_default_policy_bounds_the_retries_of_a_closed_local_port(caplog):
    assert RetryPolicy().local_refused_timeout < 2.0 < RetryPolicy().timeout
    with (
        caplog.at_level(logging.WARNING, logger="neon_connect"),
        pytest.raises(psycopg.OperationalError) as info,
    ):
        neon_connect.connect(Secret(_url()))
    assert len(_retry_lines(caplog)) <= MAX_LOCAL_RETRIES
    assert HINT in "\n".join(info.value.__notes__)


def test_sqlalchemy_engine_on_a_closed_local_port(caplog):
    engine = create_engine(Secret(_url(scheme="postgresql+psycopg")), env={})
    with (
        caplog.at_level(logging.WARNING, logger="neon_connect"),
        pytest.raises(sqlalchemy.exc.OperationalError) as info,
    ):
        engine.connect()
    engine.dispose()
    assert len(_retry_lines(caplog)) <= MAX_LOCAL_RETRIES
    assert HINT in "\n".join(getattr(info.value.orig, "__notes__", []))


@pytest.mark.integration
def test_django_migrate_on_a_stopped_stand_in(neon_local):
    """``migrate`` with both URLs pointing at closed local ports: a few lines, the hint."""
    env = {
        **neon_local.env(),
        "DATABASE_URL": _url() + "&pgbouncer=true",
        "DATABASE_URL_UNPOOLED": _url(),
    }
    result = run_python(
        "-m",
        "django",
        "migrate",
        env={
            "DJANGO_SETTINGS_MODULE": "tests.django_settings",
            "NEON_TESTS_STANDIN": json.dumps(env),
        },
    )
    assert result.returncode == 1
    assert HINT in result.stderr
    retries = [line for line in result.stderr.splitlines() if "; retry " in line]
    assert len(retries) <= MAX_LOCAL_RETRIES, result.stderr
    assert SECRET not in result.stderr + result.stdout
