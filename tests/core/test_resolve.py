from __future__ import annotations

import pytest

from neon_connect import InvalidURLError, MissingURLError, NoDirectEndpointError, resolve
from tests.constants import SECRET

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
DIRECT = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
Q = "?sslmode=require&channel_binding=require"


def neon(host: str) -> str:
    return f"postgresql://neondb_owner:{SECRET}@{host}/neondb{Q}"


# (environment, app host, app source, direct host, direct source)
NEON_CASES = [
    ({"DATABASE_URL": neon(POOLED)}, POOLED, "DATABASE_URL", DIRECT, "derived from DATABASE_URL"),
    ({"DATABASE_URL": neon(DIRECT)}, POOLED, "derived from DATABASE_URL", DIRECT, "DATABASE_URL"),
    (
        {"DATABASE_URL": neon(POOLED), "DATABASE_URL_UNPOOLED": neon(DIRECT)},
        POOLED,
        "DATABASE_URL",
        DIRECT,
        "DATABASE_URL_UNPOOLED",
    ),
    # swapped by mistake: the hosts decide, not the variable names
    (
        {"DATABASE_URL": neon(DIRECT), "DATABASE_URL_UNPOOLED": neon(POOLED)},
        POOLED,
        "DATABASE_URL_UNPOOLED",
        DIRECT,
        "DATABASE_URL",
    ),
    (
        {"POSTGRES_URL": neon(POOLED), "POSTGRES_URL_NON_POOLING": neon(DIRECT)},
        POOLED,
        "POSTGRES_URL",
        DIRECT,
        "POSTGRES_URL_NON_POOLING",
    ),
    (
        {"DATABASE_URL": neon(POOLED), "DIRECT_URL": neon(DIRECT)},
        POOLED,
        "DATABASE_URL",
        DIRECT,
        "DIRECT_URL",
    ),
    # Prisma Postgres: DATABASE_URL is the direct one, DATABASE_URL_POOLED the pooled one
    (
        {"DATABASE_URL": neon(DIRECT), "DATABASE_URL_POOLED": neon(POOLED)},
        POOLED,
        "DATABASE_URL_POOLED",
        DIRECT,
        "DATABASE_URL",
    ),
    # DATABASE_URL wins over POSTGRES_URL
    (
        {"DATABASE_URL": neon(POOLED), "POSTGRES_URL": "postgresql://x@other/db"},
        POOLED,
        "DATABASE_URL",
        DIRECT,
        "derived from DATABASE_URL",
    ),
    # only the direct variable is set
    (
        {"DATABASE_URL_UNPOOLED": neon(DIRECT)},
        POOLED,
        "derived from DATABASE_URL_UNPOOLED",
        DIRECT,
        "DATABASE_URL_UNPOOLED",
    ),
    # empty variables count as unset
    (
        {"DATABASE_URL": "", "POSTGRES_URL": neon(POOLED)},
        POOLED,
        "POSTGRES_URL",
        DIRECT,
        "derived from POSTGRES_URL",
    ),
    # the libpq variables, as Neon's Vercel integration sets them
    (
        {
            "PGHOST": POOLED,
            "PGHOST_UNPOOLED": DIRECT,
            "PGUSER": "neondb_owner",
            "PGPASSWORD": SECRET,
            "PGDATABASE": "neondb",
        },
        POOLED,
        "PGHOST (+ PG* variables)",
        DIRECT,
        "PGHOST_UNPOOLED (+ PG* variables)",
    ),
    (
        {"PGHOST": POOLED, "PGUSER": "neondb_owner", "PGPASSWORD": SECRET},
        POOLED,
        "PGHOST (+ PG* variables)",
        DIRECT,
        "derived from PGHOST (+ PG* variables)",
    ),
]


@pytest.mark.parametrize(
    ("env", "app_host", "app_source", "direct_host", "direct_source"), NEON_CASES
)
def test_neon_environments(env, app_host, app_source, direct_host, direct_source):
    endpoints = resolve(env=env)
    assert endpoints.is_neon
    assert endpoints.endpoint_id == "ep-cool-darkness-123456"
    assert endpoints.region == "aws-us-east-2"
    app, direct = endpoints.app, endpoints.session()
    assert (app.host, app.source, app.kind, app.transaction_pooler) == (
        app_host,
        app_source,
        "pooled",
        True,
    )
    assert (direct.host, direct.source, direct.kind, direct.transaction_pooler) == (
        direct_host,
        direct_source,
        "direct",
        False,
    )
    assert app.password == direct.password == SECRET
    assert app.port == direct.port == 5432


def test_opting_out_keeps_traffic_on_the_direct_url():
    endpoints = resolve(neon(DIRECT), use_pooler=False)
    assert endpoints.app.host == DIRECT and endpoints.app.kind == "direct"
    # a URL that is pooled already stays pooled
    assert resolve(neon(POOLED), use_pooler=False).app.host == POOLED


def test_explicit_arguments_win_and_skip_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL_UNPOOLED", "postgresql://u@elsewhere/db")
    endpoints = resolve(neon(POOLED))
    assert endpoints.app.source == "url argument"
    assert endpoints.session().host == DIRECT
    both = resolve("postgresql://u@pgbouncer:6432/app", direct_url="postgresql://u@pg:5432/app")
    assert (both.app.kind, both.app.transaction_pooler, both.session().host) == (
        "pooled",
        True,
        "pg",
    )


def test_custom_variable_names():
    env = {"APP_DB": neon(POOLED), "MIGRATIONS_DB": neon(DIRECT)}
    endpoints = resolve(env=env, app_vars=["APP_DB"], direct_vars=["MIGRATIONS_DB"])
    assert (endpoints.app.source, endpoints.session().source) == ("APP_DB", "MIGRATIONS_DB")


def test_non_neon_two_urls_mean_pooler_and_postgres():
    env = {
        "DATABASE_URL": "postgresql://u:p@127.0.0.1:6432/app",
        "DATABASE_URL_UNPOOLED": "postgresql://u:p@127.0.0.1:5432/app",
    }
    endpoints = resolve(env=env)
    assert not endpoints.is_neon
    assert (endpoints.app.port, endpoints.app.kind, endpoints.app.transaction_pooler) == (
        6432,
        "pooled",
        True,
    )
    assert (endpoints.session().port, endpoints.session().kind) == (5432, "direct")


def test_non_neon_lone_url_is_plain_postgres_for_both_roles():
    endpoints = resolve(env={"DATABASE_URL": "postgresql://u:p@db.internal:5432/app"})
    assert endpoints.same
    assert (endpoints.app.kind, endpoints.app.transaction_pooler) == ("direct", False)


def test_the_same_url_twice_is_a_lone_url():
    url = "postgresql://u:p@db.internal:5432/app"
    assert resolve(env={"DATABASE_URL": url, "DATABASE_URL_UNPOOLED": url}).same


def test_pgbouncer_true_marks_a_pooler_and_is_stripped():
    endpoints = resolve(
        env={"DATABASE_URL": "postgresql://u:p@bouncer:6432/app?pgbouncer=true&sslmode=require"}
    )
    assert endpoints.app.transaction_pooler and endpoints.app.kind == "pooled"
    assert dict(endpoints.app.params) == {"sslmode": "require"}
    assert endpoints.direct is None
    with pytest.raises(NoDirectEndpointError, match="DATABASE_URL_UNPOOLED"):
        endpoints.session()
    # stripped from Neon URLs too
    assert "pgbouncer" not in resolve(neon(POOLED) + "&pgbouncer=true").app.params


def test_nothing_set_lists_every_variable_looked_at():
    with pytest.raises(MissingURLError) as info:
        resolve(env={})
    for name in (
        "DATABASE_URL_POOLED",
        "DATABASE_URL",
        "POSTGRES_URL",
        "PGHOST",
        "DATABASE_URL_UNPOOLED",
        "POSTGRES_URL_NON_POOLING",
        "DIRECT_URL",
        "PGHOST_UNPOOLED",
    ):
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_repr_and_str_never_show_the_password():
    endpoints = resolve(neon(POOLED))
    for text in (repr(endpoints), str(endpoints.app), repr(endpoints.app), endpoints.app.url()):
        assert SECRET not in text
    assert SECRET in endpoints.app.url(reveal_password=True)


def test_endpoints_are_immutable():
    endpoint = resolve(neon(POOLED)).app
    with pytest.raises(AttributeError):
        endpoint.host = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        endpoint.params["sslmode"] = "disable"  # type: ignore[index]


def test_a_bad_pgport_names_the_variable():
    from neon_connect import InvalidURLError

    with pytest.raises(InvalidURLError, match="PGPORT"):
        resolve(env={"PGHOST": "db.internal", "PGPORT": "54x2", "PGPASSWORD": SECRET})
    assert resolve(env={"PGHOST": "db.internal", "PGPORT": "6543"}).app.port == 6543


@pytest.mark.parametrize("value", [f"postgresql://u:{SECRET}@h/db".encode(), 5432, ["x"]])
def test_a_url_that_is_not_a_string_is_named(value):
    for kw in ({"url": value}, {"url": "postgresql://u@h/db", "direct_url": value}):
        with pytest.raises(InvalidURLError, match="must be a string") as info:
            resolve(**kw, env={})
        assert SECRET not in str(info.value) and info.value.__context__ is None


def test_endpoints_pickle_whole():
    """Django's parallel runner pickles settings holding them for ``spawn`` workers."""
    import pickle

    endpoints = resolve(env={"DATABASE_URL": neon(POOLED)})
    back = pickle.loads(pickle.dumps(endpoints))
    assert back == endpoints
    assert back.app.password == endpoints.app.password
    assert dict(back.app.params) == dict(endpoints.app.params)
