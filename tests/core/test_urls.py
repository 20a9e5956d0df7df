from __future__ import annotations

import pytest

from neon_connect import InvalidURLError, mask_url, parse_url
from tests.constants import SECRET

HOST = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"


def test_parses_a_neon_console_url():
    parsed = parse_url(
        f"postgresql://neondb_owner:{SECRET}@{HOST}/neondb?sslmode=require&channel_binding=require"
    )
    assert parsed.host == HOST
    assert parsed.port is None
    assert (parsed.user, parsed.password, parsed.database) == ("neondb_owner", SECRET, "neondb")
    assert parsed.params == {"sslmode": "require", "channel_binding": "require"}
    assert SECRET not in repr(parsed)


@pytest.mark.parametrize(
    ("url", "expected_password"),
    [
        ("postgres://u:p%40ss%2Fw%3Ard@h:5433/db", "p@ss/w:rd"),
        (
            "postgresql://u:p@ss@h:5433/db",
            "p@ss",
        ),  # an unquoted '@' is unambiguous: the last one ends it
        ("postgresql://u:pa:ss@h:5433/db", "pa:ss"),
        ("postgresql+psycopg://u:pw@h:5433/db", "pw"),
        ("postgresql://h:5433/db?user=u&password=pw", "pw"),
    ],
)
def test_passwords_round_trip(url, expected_password):
    parsed = parse_url(url)
    assert (parsed.host, parsed.port, parsed.user, parsed.password, parsed.database) == (
        "h",
        5433,
        "u",
        expected_password,
        "db",
    )


def test_keyword_dsn_and_ipv6():
    parsed = parse_url(f"host=h port=6543 user=u password='{SECRET}' dbname=d sslmode=require")
    assert (parsed.host, parsed.port, parsed.password, parsed.params) == (
        "h",
        6543,
        SECRET,
        {"sslmode": "require"},
    )
    assert parse_url("postgresql://u@[::1]:5432/d").host == "::1"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"postgresql://u:{SECRET}/x@{HOST}/neondb", "unquoted '/', '?', '#' or '@'"),
        (f"postgresql://u:{SECRET}?x@{HOST}/neondb", "unquoted '/', '?', '#' or '@'"),
        (f"postgresql://u:{SECRET}#x@{HOST}/neondb", "unquoted '/', '?', '#' or '@'"),
        (f"postgresql://u:{SECRET} @{HOST}/neondb", "space or line break"),
        (f"postgresql://u:{SECRET}\n@{HOST}/neondb", "space or line break"),
        (f"postgresql://u:{SECRET}", "port that is not a number"),  # truncated paste
        (f"postgresql://u:{SECRET}@/db?x", "not key=value"),
        (f"postgresql://u:{SECRET}@{HOST}:99999/db", "port that is not a number"),
        (f"mysql://u:{SECRET}@{HOST}/db", "scheme 'mysql'"),
        (f"host=h password='{SECRET}", "key=value"),
        ("", "is empty"),
        ("not a url", "has no scheme"),
    ],
)
def test_malformed_urls_name_the_variable_and_hide_the_password(url, fragment):
    with pytest.raises(InvalidURLError) as info:
        parse_url(url, name="DATABASE_URL")
    message = str(info.value)
    assert fragment in message
    assert "DATABASE_URL" in message
    assert SECRET not in message and SECRET[:8] not in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@{HOST}/neondb?sslmode=require",
        f"postgresql://u:{SECRET}/x@{HOST}/neondb",
        f"postgresql://u:{SECRET}@h@{HOST}/neondb",
        f"postgresql://u:{SECRET}",
        f"postgresql://{HOST}/neondb?user=u&password={SECRET}",
        f"host={HOST} password={SECRET} user=u",
        f"host={HOST} password='{SECRET} with space' user=u",
    ],
)
def test_mask_url_hides_the_password(url):
    masked = mask_url(url)
    assert SECRET not in masked
    assert "****" in masked


def test_mask_url_keeps_what_is_not_secret():
    assert mask_url(f"postgresql://u:{SECRET}@{HOST}:5432/neondb?sslmode=require") == (
        f"postgresql://u:****@{HOST}:5432/neondb?sslmode=require"
    )
    assert mask_url("postgresql://h:5432/db") == "postgresql://h:5432/db"
