"""neon_django.config(): the settings it produces, and its errors."""

from __future__ import annotations

import django
import pytest
from django.core.exceptions import ImproperlyConfigured

import neon_django
from neon_connect import RetryPolicy
from neon_django._config import NeonSettings
from tests.constants import SECRET
from tests.driver import DJANGO_DRIVER

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
DIRECT = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
URL = f"postgresql://neondb_owner:{SECRET}@{POOLED}/neondb?sslmode=require&channel_binding=require"


def test_pooled_neon_alias():
    db = neon_django.config(URL)
    assert db["ENGINE"] == "neon_django.backend"
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        POOLED,
        "5432",
        "neondb",
        "neondb_owner",
        SECRET,
    )
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert db["CONN_MAX_AGE"] == 240 and db["CONN_HEALTH_CHECKS"] is True  # "auto", long-running
    # psycopg 3 prepares automatically unless told not to; psycopg2 never prepares
    assert db["OPTIONS"].get("prepare_threshold", "absent") is (
        None if DJANGO_DRIVER == "psycopg" else "absent"
    )
    assert db["OPTIONS"]["sslmode"] == "require" and db["OPTIONS"]["channel_binding"] == "require"
    assert db["OPTIONS"]["connect_timeout"] == "10"
    assert "pool" not in db["OPTIONS"]
    direct = db["NEON"]["DIRECT"]
    assert direct["HOST"] == DIRECT and "prepare_threshold" not in direct["OPTIONS"]
    endpoints = db["NEON"]["ENDPOINTS"]  # resolved once, carried for the backend and checks
    assert endpoints.direct.source == "derived from url argument"
    assert endpoints.endpoint_id == "ep-cool-darkness-123456"
    assert sorted(db["NEON"]) == sorted(NeonSettings.__annotations__)


def test_env_and_custom_variable_names():
    db = neon_django.config(env={"MY_DB": URL}, app_vars=["MY_DB"])
    assert db["HOST"] == POOLED and db["NEON"]["ENDPOINTS"].app.source == "MY_DB"


def test_conn_max_age_is_capped_below_the_suspend_and_health_checked():
    db = neon_django.config(URL, conn_max_age=600)
    assert db["CONN_MAX_AGE"] == 240 and db["CONN_HEALTH_CHECKS"] is True
    assert neon_django.config(URL, conn_max_age=None)["CONN_MAX_AGE"] == 240
    assert neon_django.config(URL, conn_max_age=60)["CONN_MAX_AGE"] == 60
    plain = neon_django.config("postgresql://u:p@db.internal/app", conn_max_age=None)
    assert plain["CONN_MAX_AGE"] is None  # no suspend to outlive off Neon


SERVERLESS = ["AWS_LAMBDA_FUNCTION_NAME", "VERCEL", "NETLIFY", "FUNCTIONS_WORKER_RUNTIME"]


@pytest.mark.parametrize("marker", [*SERVERLESS, "FUNCTION_TARGET"])
def test_auto_conn_max_age_is_zero_in_serverless_functions(marker):
    db = neon_django.config(env={"DATABASE_URL": URL, marker: "1"})
    assert db["CONN_MAX_AGE"] == 0 and db["CONN_HEALTH_CHECKS"] is False
    assert (
        neon_django.config(env={"DATABASE_URL": URL, marker: "1"}, conn_max_age=60)["CONN_MAX_AGE"]
        == 60
    )  # an explicit value wins


def test_auto_conn_max_age_keeps_connections_in_long_running_servers():
    cloud_run = {
        "DATABASE_URL": URL,
        "K_SERVICE": "shop",
        "PORT": "8080",
    }  # a server, not a function
    db = neon_django.config(env=cloud_run)
    assert db["CONN_MAX_AGE"] == 240 and db["CONN_HEALTH_CHECKS"] is True
    assert neon_django.config(env=cloud_run, conn_max_age=0)["CONN_MAX_AGE"] == 0
    assert neon_django.config(env={"DATABASE_URL": URL, "VERCEL": ""})["CONN_MAX_AGE"] == 240
    # a non-Neon PgBouncer is a transaction pooler too
    bouncer = neon_django.config("postgresql://u:p@bouncer:6432/app?pgbouncer=true")
    assert bouncer["CONN_MAX_AGE"] == 240


@pytest.mark.parametrize(
    ("marker", "limit"),
    [
        ("K_SERVICE", 10.0),  # Cloud Run service: elastic
        ("ECS_CONTAINER_METADATA_URI_V4", 10.0),
        ("MODAL_TASK_ID", 10.0),
        ("DYNO", None),  # Heroku: a long-running server
        ("KUBERNETES_SERVICE_HOST", None),
    ],
)
def test_auto_idle_timeout_follows_neons_guidance_for_elastic_platforms(marker, limit):
    db = neon_django.config(env={"DATABASE_URL": URL, marker: "x"})
    assert db["NEON"]["IDLE_TIMEOUT"] == limit and db["CONN_MAX_AGE"] == 240
    assert (
        neon_django.config(env={"DATABASE_URL": URL, marker: "x"}, idle_timeout=None)["NEON"][
            "IDLE_TIMEOUT"
        ]
        is None
    )  # an explicit value wins
    with pytest.raises(ImproperlyConfigured, match="idle_timeout"):
        neon_django.config(env={"DATABASE_URL": URL}, idle_timeout=-1)


def test_auto_conn_max_age_is_zero_on_direct_endpoints():
    direct = neon_django.config(URL.replace(POOLED, DIRECT), use_pooler=False)
    assert direct["CONN_MAX_AGE"] == 0 and direct["CONN_HEALTH_CHECKS"] is False
    plain = neon_django.config("postgresql://u:p@db.internal/app")
    assert plain["CONN_MAX_AGE"] == 0


@pytest.mark.psycopg3_only  # psycopg 3's automatic prepares; psycopg2 never prepares
def test_user_prepare_threshold_is_refused_on_the_pooler_unless_declared():
    with pytest.raises(ImproperlyConfigured, match="prepared_statements=True"):
        neon_django.config(URL, options={"prepare_threshold": 5})
    declared = neon_django.config(URL, options={"prepare_threshold": 5}, prepared_statements=True)
    assert declared["OPTIONS"]["prepare_threshold"] == 5
    direct = neon_django.config(
        "postgresql://u:p@db.internal/app", options={"prepare_threshold": 5}
    )
    assert direct["OPTIONS"]["prepare_threshold"] == 5  # a real session keeps its statements


def test_pool_is_refused_on_the_pooler_and_tuned_on_a_direct_endpoint():
    with pytest.raises(ImproperlyConfigured, match="double pooling") as info:
        neon_django.config(URL, pool=True)
    assert SECRET not in str(info.value)
    if django.VERSION < (5, 1):  # Django's pool option arrived in 5.1
        with pytest.raises(ImproperlyConfigured, match="needs Django 5.1"):
            neon_django.config(URL.replace(POOLED, DIRECT), use_pooler=False, pool=True)
    else:
        db = neon_django.config(URL.replace(POOLED, DIRECT), use_pooler=False, pool={"max_size": 4})
        assert db["DISABLE_SERVER_SIDE_CURSORS"] is False
        assert db["OPTIONS"]["pool"]["max_size"] == 4
        assert db["OPTIONS"]["pool"]["max_idle"] == 120.0
        # Django hands the pool its check itself, from CONN_HEALTH_CHECKS (a second one
        # here made ConnectionPool() raise TypeError at the first query)
        assert "check" not in db["OPTIONS"]["pool"] and db["CONN_HEALTH_CHECKS"] is True
        assert db["NEON"]["DIRECT"] is None  # one endpoint for both roles
        with pytest.raises(ImproperlyConfigured, match=r"pool=\{'check': \.\.\.\}.*conn_health"):
            neon_django.config(URL.replace(POOLED, DIRECT), use_pooler=False, pool={"check": print})
    for kept in (60, None):  # Django refuses both at the first query ("persistent connections")
        with pytest.raises(ImproperlyConfigured, match="conn_max_age=0"):
            neon_django.config(
                URL.replace(POOLED, DIRECT), use_pooler=False, pool=True, conn_max_age=kept
            )


@pytest.mark.parametrize(
    ("options", "match"),
    [({"options": "-c search_path=app"}, "SET LOCAL"), ({"assume_role": "reader"}, "SET ROLE")],
)
def test_session_state_on_the_pooler_is_refused(options, match):
    with pytest.raises(ImproperlyConfigured, match=match):
        neon_django.config(URL, options=options)


def test_url_startup_options_on_the_pooler_are_refused():
    with pytest.raises(ImproperlyConfigured, match="'options'"):
        neon_django.config(URL + "&options=-c%20search_path%3Dapp")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DATABASE_URL": f"postgresql://u:{SECRET}/x@{POOLED}/neondb"}, ["DATABASE_URL"]),
        ({"DATABASE_URL": f"postgresql://u:{SECRET} @{POOLED}/neondb"}, ["DATABASE_URL"]),
        ({"DATABASE_URL": f"postgresql://u:{SECRET}"}, ["DATABASE_URL"]),
        ({"DATABASE_URL": f"mysql://u:{SECRET}@h/db"}, ["DATABASE_URL"]),
        (
            {"DATABASE_URL": URL.replace("sslmode=require", "sslmode=disable")},
            ["sslmode=disable", "DATABASE_URL"],
        ),
        ({}, ["DATABASE_URL", "DATABASE_URL_UNPOOLED", "PGHOST"]),
    ],
)
def test_bad_database_url_values(env, names):
    with pytest.raises(ImproperlyConfigured) as info:
        neon_django.config(env=env)
    for name in names:
        assert name in str(info.value)
    assert SECRET not in str(info.value) and SECRET[:6] not in str(info.value)


def test_ssl_require_like_dj_database_url():
    assert (
        neon_django.config("postgresql://u:p@db.internal/app", ssl_require=True)["OPTIONS"][
            "sslmode"
        ]
        == "require"
    )
    assert "sslmode" not in neon_django.config("postgresql://u:p@db.internal/app")["OPTIONS"]
    kept = neon_django.config(
        "postgresql://u:p@db.internal/app?sslmode=verify-full&sslrootcert=system", ssl_require=True
    )
    assert kept["OPTIONS"]["sslmode"] == "verify-full"


def test_non_neon_pair_and_pgbouncer_marker():
    db = neon_django.config(
        env={
            "DATABASE_URL": "postgresql://u:p@bouncer:6432/app",
            "DATABASE_URL_UNPOOLED": "postgresql://u:p@pg/app",
        }
    )
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is True and db["NEON"]["DIRECT"]["HOST"] == "pg"
    marked = neon_django.config("postgresql://u:p@bouncer:6432/app?pgbouncer=true")
    assert marked["NEON"]["ENDPOINTS"].direct is None and "pgbouncer" not in marked["OPTIONS"]
    lone = neon_django.config("postgresql://u:p@db.internal/app")
    assert (
        lone["DISABLE_SERVER_SIDE_CURSORS"] is False and "prepare_threshold" not in lone["OPTIONS"]
    )


@pytest.mark.parametrize(
    ("url", "kwargs", "fragment"),
    [
        (URL, {"conn_max_age": -1}, "conn_max_age"),
        (URL, {"conn_max_age": "600"}, "conn_max_age='600'"),
        (URL, {"retry_timeout": -1}, "retry_timeout"),
        (URL, {"retry": 5}, r"retry=5\): use a neon_connect.RetryPolicy"),
        (f"postgresql://u:{SECRET}@h1:5432,h2:5433/db", {}, "several hosts"),
        (f"postgresql://u:{SECRET}@{POOLED}/db", {"options": {"pool": True}}, "pool="),
    ],
)
@pytest.mark.filterwarnings("ignore:neon_django option retry_timeout:DeprecationWarning")
def test_every_configuration_error_is_improperly_configured(url, kwargs, fragment):
    with pytest.raises(ImproperlyConfigured, match=fragment) as info:
        neon_django.config(url, **kwargs)
    assert type(info.value) is ImproperlyConfigured
    assert SECRET not in str(info.value) and info.value.__context__ is None


def test_the_old_name_of_prepared_statements_still_works_with_a_deprecation_warning():
    """Issue 20: one name in both adapters (the engines' ``prepared_statements``)."""
    env = {"DATABASE_URL": URL}
    with pytest.warns(DeprecationWarning, match="prepared_statements=") as caught:
        old = neon_django.config(env=env, pooler_prepared_statements=True)
    assert caught[0].filename == __file__  # points at the caller's line
    assert old == neon_django.config(env=env, prepared_statements=True)
    assert old["NEON"]["PREPARED_STATEMENTS"] is True


def test_the_old_retry_timeout_becomes_retry_with_a_deprecation_warning():
    """Issue 20: ``retry=RetryPolicy(...)``, as on the engines; ``retry_timeout=s`` still works."""
    env = {"DATABASE_URL": URL}
    with pytest.warns(DeprecationWarning, match="retry_timeout= is now retry=") as caught:
        old = neon_django.config(env=env, retry_timeout=3)
    assert caught[0].filename == __file__
    assert old == neon_django.config(env=env, retry=RetryPolicy(timeout=3))
    assert old["NEON"]["RETRY"] == RetryPolicy(timeout=3)


def test_databases_takes_the_old_names_too():
    """``databases()`` passes its options on to every alias: the old names must not break it
    (``pooler_prepared_statements=`` raised a ``TypeError`` there)."""
    env = {"DATABASE_URL": URL, "DATABASE_URL_REPLICA": URL.replace("-pooler", "-replica")}
    with pytest.warns(DeprecationWarning) as caught:
        old = neon_django.databases(
            env=env, pooler_prepared_statements=True, retry_timeout=4, replica_retry_timeout=1
        )
    assert {w.filename for w in caught} == {__file__}
    assert [str(w.message).split("=")[0] for w in caught] == [
        "neon_django option pooler_prepared_statements",
        "neon_django option retry_timeout",
        "neon_django option replica_retry_timeout",
    ]
    new = neon_django.databases(
        env=env,
        prepared_statements=True,
        retry=RetryPolicy(timeout=4),
        replica_retry=RetryPolicy(timeout=1),
    )
    assert old == new
    assert new["default"]["NEON"]["RETRY"].timeout == 4
    assert new["replica_1"]["NEON"]["RETRY"].timeout == 1
    assert new["replica_1"]["NEON"]["PREPARED_STATEMENTS"] is True


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("call", "kwargs", "fragment"),
    [
        (
            "config",
            {"retry": RetryPolicy(timeout=9), "retry_timeout": 1},
            "retry_timeout= and retry=",
        ),
        ("config", {"prepared_statements": True, "pooler_prepared_statements": False}, "pooler_"),
        ("databases", {"retry": RetryPolicy(timeout=9), "retry_timeout": 1}, "keep retry= only"),
        (
            "databases",
            {"replica_retry": RetryPolicy(), "replica_retry_timeout": 1},
            "replica_retry=",
        ),
        ("databases", {"replica_retry": 2.0}, r"databases\(replica_retry=2.0\): use a"),
    ],
)
def test_an_old_name_with_its_new_one_or_a_wrong_type_is_refused(call, kwargs, fragment):
    """Which of the two should win is the user's to say; the error names the call they wrote."""
    with pytest.raises(ImproperlyConfigured, match=fragment):
        getattr(neon_django, call)(env={"DATABASE_URL": URL}, **kwargs)
