"""Replica URLs: read, resolved through the core to pooled endpoints, refused by name when wrong."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import neon_django
from neon_connect import ConfigurationError, InvalidURLError, resolve
from neon_connect._replicas import REPLICA_VAR, resolve_replicas
from tests.constants import SECRET
from tests.driver import DJANGO_DRIVER

REGION = "us-east-2.aws.neon.tech"
PRIMARY = (
    f"postgresql://app:{SECRET}@ep-cool-darkness-123456-pooler.{REGION}/neondb?sslmode=require"
)
REPLICA = f"postgresql://app:{SECRET}@ep-quiet-river-654321.{REGION}/neondb?sslmode=require"
REPLICA2 = f"postgresql://app:{SECRET}@ep-red-sun-111111-pooler.{REGION}/neondb?sslmode=require"


def _replicas(value: str, primary: str = PRIMARY) -> tuple[str, ...]:
    env = {"DATABASE_URL": primary, REPLICA_VAR: value}
    return tuple(e.host for e in resolve_replicas(primary=resolve(env=env), env=env))


def test_a_direct_replica_url_resolves_to_its_pooler_with_the_primarys_params() -> None:
    env = {"DATABASE_URL": PRIMARY, REPLICA_VAR: REPLICA}
    (replica,) = resolve_replicas(primary=resolve(env=env), env=env)
    assert replica.host == f"ep-quiet-river-654321-pooler.{REGION}"
    assert replica.transaction_pooler and replica.kind == "pooled"
    assert replica.params["sslmode"] == "require"
    assert replica.source == REPLICA_VAR


def test_several_replicas_comma_separated_and_as_an_argument() -> None:
    expected = (f"ep-quiet-river-654321-pooler.{REGION}", f"ep-red-sun-111111-pooler.{REGION}")
    assert _replicas(f"{REPLICA}, {REPLICA2}") == expected
    given = resolve_replicas([REPLICA, REPLICA2], primary=resolve(PRIMARY), env={})
    assert tuple(e.host for e in given) == expected
    assert [e.source for e in given] == ["replica_urls[0]", "replica_urls[1]"]


def test_no_replica_configured_is_no_replica() -> None:
    assert resolve_replicas(primary=resolve(PRIMARY), env={}) == ()
    assert _replicas("") == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (PRIMARY.replace("-pooler", ""), "primary's own endpoint ep-cool-darkness-123456"),
        (PRIMARY, "primary's own endpoint"),
        (REPLICA.replace("us-east-2", "eu-central-1"), "belongs to another project"),
        (f"postgresql://app:{SECRET}@db.example.com/neondb", "only the primary is a Neon host"),
        (REPLICA.replace("/neondb", "/other"), "names the database 'other'"),
        (f"{REPLICA},,{REPLICA2}", "has an empty entry"),
        (f"{REPLICA},{REPLICA}", r"repeats DATABASE_URL_REPLICA \(entry 1\)"),
        ("mysql://x@y/neondb", "DATABASE_URL_REPLICA"),
    ],
)
def test_wrong_replica_urls_are_one_clear_error(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        _replicas(value)
    assert REPLICA_VAR in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.__context__)
    assert info.value.__cause__ is None


def test_a_bad_entry_in_a_list_is_named_by_position() -> None:
    with pytest.raises(InvalidURLError, match=r"DATABASE_URL_REPLICA \(entry 2\)"):
        _replicas(f"{REPLICA},postgresql://app:{SECRET}@host:notaport/neondb")


def test_a_plain_replica_behind_a_pooled_primary_counts_as_pooled() -> None:
    env = {
        "DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:6432/neondb",
        "DATABASE_URL_UNPOOLED": f"postgresql://u:{SECRET}@127.0.0.1:5432/neondb",
    }
    primary = resolve(env=env)
    (replica,) = resolve_replicas(f"postgresql://u:{SECRET}@127.0.0.1:6433/neondb", primary=primary)
    assert replica.transaction_pooler
    with pytest.raises(ConfigurationError, match="primary's own server 127.0.0.1:5432"):
        resolve_replicas(env["DATABASE_URL_UNPOOLED"], primary=primary)


def test_databases_without_replicas_is_just_config() -> None:
    env = {"DATABASE_URL": PRIMARY}
    assert neon_django.databases(env=env) == {"default": neon_django.config(env=env)}


def test_databases_names_the_variable_as_improperly_configured() -> None:
    env = {"DATABASE_URL": PRIMARY, REPLICA_VAR: PRIMARY}
    with pytest.raises(ImproperlyConfigured, match=REPLICA_VAR) as info:
        neon_django.databases(env=env)
    assert SECRET not in str(info.value)


def test_replica_alias_mirrors_default_and_keeps_the_pooler_rules() -> None:
    dbs = neon_django.databases(env={"DATABASE_URL": PRIMARY, REPLICA_VAR: f"{REPLICA},{REPLICA2}"})
    assert list(dbs) == ["default", "replica_1", "replica_2"]
    replica = dbs["replica_1"]
    assert replica["TEST"] == {"MIRROR": "default"}
    assert replica["HOST"] == f"ep-quiet-river-654321-pooler.{REGION}"
    assert replica["DISABLE_SERVER_SIDE_CURSORS"] is True
    if DJANGO_DRIVER == "psycopg":  # psycopg2 never prepares: no such option there
        assert replica["OPTIONS"]["prepare_threshold"] is None
    assert replica["NEON"]["REPLICA_OF"] == "default"
    assert replica["NEON"]["RETRY"].timeout == 2.0


def test_databases_resolves_once_and_never_rebuilds_a_url(monkeypatch) -> None:
    """Issue 20: each replica used to go back through a URL with its password revealed (and a
    ``pgbouncer=true`` added so the kind survived the trip). Now the resolved objects are
    carried: nothing asks an endpoint for its URL in clear, and the replica's endpoint is the
    one the core settled on, with the variable that named it."""
    from neon_connect import Endpoint

    def refuse(self, *, reveal_password: bool = False, **kwargs):
        assert not reveal_password, "a URL with the password in clear was built"
        return original(self, reveal_password=reveal_password, **kwargs)

    original = Endpoint.url
    monkeypatch.setattr(Endpoint, "url", refuse)
    env = {
        "DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:6432/neondb?pgbouncer=true",
        "DATABASE_URL_UNPOOLED": f"postgresql://u:{SECRET}@127.0.0.1:5432/neondb",
        REPLICA_VAR: f"postgresql://u:{SECRET}@127.0.0.1:6433/neondb",
    }
    dbs = neon_django.databases(env=env)
    app = dbs["replica_1"]["NEON"]["ENDPOINTS"].app
    assert app.transaction_pooler and app.source == REPLICA_VAR
    assert "pgbouncer" not in app.params and "pgbouncer" not in dbs["replica_1"]["OPTIONS"]
    assert dbs["replica_1"]["NEON"]["ENDPOINTS"].direct is None  # the server behind: unknown


def test_a_neon_replica_alias_knows_its_own_direct_endpoint() -> None:
    dbs = neon_django.databases(env={"DATABASE_URL": PRIMARY, REPLICA_VAR: REPLICA})
    pair = dbs["replica_1"]["NEON"]["ENDPOINTS"]
    assert pair.app.host == f"ep-quiet-river-654321-pooler.{REGION}"
    assert pair.direct is not None and pair.direct.host == f"ep-quiet-river-654321.{REGION}"


# -- system checks (they read settings only; nothing connects) ------------------------------

DBS = neon_django.databases(env={"DATABASE_URL": PRIMARY, REPLICA_VAR: REPLICA})
ROUTED = {
    "DATABASE_ROUTERS": ["neon_django.routers.ReplicaRouter"],
    "MIDDLEWARE": ["neon_django.routers.ReplicaStickinessMiddleware"],
}


def _ids(databases: dict[str, object], **settings: object) -> list[str]:
    with override_settings(DATABASES=databases, **settings):
        return sorted(m.id for m in run_checks() if m.id and m.id.startswith("neon_django."))


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")
def test_checks_for_replica_aliases() -> None:
    assert _ids(DBS, **ROUTED) == []
    assert _ids(DBS, MIDDLEWARE=ROUTED["MIDDLEWARE"]) == ["neon_django.E008"]
    assert _ids(DBS, DATABASE_ROUTERS=ROUTED["DATABASE_ROUTERS"]) == ["neon_django.W006"]
    unmirrored = {**DBS, "replica_1": {**DBS["replica_1"], "TEST": {}}}
    assert _ids(unmirrored, **ROUTED) == ["neon_django.E009"]


def test_an_error_from_the_inner_config_leaves_no_secret_in_our_frames() -> None:
    """databases() calls config(): its ImproperlyConfigured is raised afresh, so no frame of
    ours (the wrapper's arguments, databases()' url) holds the password."""
    import traceback

    with pytest.raises(ImproperlyConfigured) as info:
        neon_django.databases(url=PRIMARY, env={}, pool=True)  # pool on a pooler: refused
    assert info.value.__context__ is None and info.value.__cause__ is None
    page = "".join(
        traceback.TracebackException.from_exception(info.value, capture_locals=True).format()
    )
    assert SECRET not in page


def test_replicas_decide_auto_conn_max_age_from_the_callers_environment() -> None:
    serverless = {"DATABASE_URL": PRIMARY, REPLICA_VAR: REPLICA, "AWS_LAMBDA_FUNCTION_NAME": "f"}
    dbs = neon_django.databases(env=serverless)
    assert [dbs[a]["CONN_MAX_AGE"] for a in dbs] == [0, 0]
    dbs = neon_django.databases(env={"DATABASE_URL": PRIMARY, REPLICA_VAR: REPLICA})
    assert [dbs[a]["CONN_MAX_AGE"] for a in dbs] == [240, 240]
