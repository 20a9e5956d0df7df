"""System checks, by id."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import neon_django
from neon_django.checks import CHECK_IDS

# The checks only read settings.DATABASES; no connection is opened, so overriding it is safe.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")

POOLED = "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech"
DIRECT = "ep-cool-darkness-123456.us-east-2.aws.neon.tech"
GOOD = neon_django.config(f"postgresql://u:p@{POOLED}/neondb")


def by_hand(host=POOLED, **extra):
    db = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "neondb",
        "USER": "u",
        "PASSWORD": "p",
        "HOST": host,
        "PORT": "5432",
    }
    db["OPTIONS"] = extra.pop("OPTIONS", {"sslmode": "require"})
    return {**db, **extra}


def ids(databases=None, **settings):
    with override_settings(DATABASES=databases or {"default": GOOD}, **settings):
        return sorted(m.id for m in run_checks() if m.id and m.id.startswith("neon_django."))


def test_config_alias_is_clean():
    assert ids() == []


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        (by_hand(), ["neon_django.E002", "neon_django.W003"]),
        (
            by_hand(DISABLE_SERVER_SIDE_CURSORS=True, OPTIONS={"prepare_threshold": 5}),
            ["neon_django.E003", "neon_django.W003"],
        ),
        (
            by_hand(DISABLE_SERVER_SIDE_CURSORS=True, OPTIONS={"pool": True}),
            ["neon_django.E004", "neon_django.W003"],
        ),
        (by_hand(DIRECT, OPTIONS={"sslmode": "disable"}), ["neon_django.E005"]),
        (
            by_hand(DISABLE_SERVER_SIDE_CURSORS=True, OPTIONS={"options": "-c search_path=x"}),
            ["neon_django.E006", "neon_django.W003"],
        ),
        (by_hand(DIRECT, CONN_MAX_AGE=600), ["neon_django.W001"]),
        (by_hand(DIRECT, CONN_MAX_AGE=None), ["neon_django.W001"]),
        (by_hand(DIRECT, CONN_MAX_AGE=600, CONN_HEALTH_CHECKS=True), []),
        (
            neon_django.config("postgresql://u:p@bouncer:6432/app?pgbouncer=true"),
            ["neon_django.W002"],
        ),
    ],
)
def test_database_checks(db, expected):
    assert ids({"default": db}) == expected


def test_app_listed_after_an_override_of_migrate():
    apps = [
        "tests.migrate_override",
        "neon_django",
        "django.contrib.contenttypes",
        "django.contrib.auth",
    ]
    with override_settings(INSTALLED_APPS=apps, DATABASES={"default": GOOD}):
        messages = [m for m in run_checks() if m.id == "neon_django.E001"]
    assert len(messages) == 1
    assert (
        "'tests.migrate_override'" in messages[0].msg
        and "Move 'neon_django' above" in messages[0].hint
    )


def test_every_id_is_registered_once_and_described():
    assert len(CHECK_IDS) == len(set(CHECK_IDS))
    assert all(len(desc) < 80 for desc in CHECK_IDS.values())


def test_call_command_check_raises_for_errors():
    with (
        override_settings(DATABASES={"default": by_hand()}),
        pytest.raises(SystemCheckError, match="neon_django.E002"),
    ):
        call_command("check")


OTHER = "ep-other-thing-654321.us-east-2.aws.neon.tech"


def _split(**kw):
    return neon_django.config(
        f"postgresql://u:p@{POOLED}/neondb",
        direct_url=f"postgresql://u:p@{OTHER}/neondb",
        allow_mismatched_endpoints=True,
        **kw,
    )


def test_a_mismatched_pair_is_reported():
    # allowed by the caller: a warning that can be silenced
    assert ids({"default": _split()}) == ["neon_django.W005"]
    # the same pair written (or edited) by hand: an error
    edited = _split()
    edited["NEON"] = {**edited["NEON"], "ALLOW_MISMATCHED_ENDPOINTS": False}
    assert ids({"default": edited}) == ["neon_django.E007"]
    other_db = dict(GOOD, NEON={**GOOD["NEON"], "DIRECT": {**GOOD["NEON"]["DIRECT"], "NAME": "x"}})
    assert ids({"default": other_db}) == ["neon_django.E007"]
