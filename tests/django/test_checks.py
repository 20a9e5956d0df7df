"""System checks, by id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import neon_django
import neon_django._checks
from neon_django import _replica_checks as replica_checks
from neon_django._checks import CHECK_IDS

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


def messages(databases=None, **settings):
    with override_settings(DATABASES=databases or {"default": GOOD}, **settings):
        return [m for m in run_checks() if m.id and m.id.startswith("neon_django.")]


def ids(databases=None, **settings):
    return sorted(m.id for m in messages(databases, **settings))


def test_config_alias_is_clean():
    assert ids() == []


DATABASE_CASES = [
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
]


@pytest.mark.parametrize(("db", "expected"), DATABASE_CASES)
def test_database_checks(db, expected):
    assert ids({"default": db}) == expected


OVERRIDE_ABOVE_US = [
    "tests.migrate_override",
    "neon_django",
    "django.contrib.contenttypes",
    "django.contrib.auth",
]


WITHOUT_US = ["django.contrib.contenttypes", "django.contrib.auth"]


def test_backend_without_the_app_is_an_error_naming_installed_apps():
    """The backend's own check (registered by config(), not by the app): without the app,
    migrate is Django's own and runs through the pooler."""
    found = messages(INSTALLED_APPS=WITHOUT_US)
    assert [m.id for m in found] == ["neon_django.E010"]
    assert "INSTALLED_APPS" in found[0].msg and "DATABASES['default']" in found[0].msg
    assert 'INSTALLED_APPS = ["neon_django", *INSTALLED_APPS]' in found[0].hint
    # the control: the app installed, or no alias on neon_django's backend, is quiet
    assert ids() == []
    assert ids({"default": by_hand(DIRECT)}, INSTALLED_APPS=WITHOUT_US) == []


def test_app_listed_after_an_override_of_migrate():
    found = [m for m in messages(INSTALLED_APPS=OVERRIDE_ABOVE_US) if m.id == "neon_django.E001"]
    assert len(found) == 1
    assert (
        "'tests.migrate_override'" in found[0].msg and "Move 'neon_django' above" in found[0].hint
    )


def test_every_id_is_registered_once_described_emitted_and_short():
    """Each id in CHECK_IDS is written once (_checks.py, _replica_checks.py) and emitted by some
    case; every message is under 80 characters (Django prints it after the alias or app name)."""
    ids_in = {  # each id once where it is emitted (the registry's keys end in ':')
        m: re.findall(r'"(neon_django\.[EW]\d{3})"(?!:)', Path(m.__file__).read_text())
        for m in (neon_django._checks, replica_checks)
    }
    written = [i for ids in ids_in.values() for i in ids]
    assert sorted(written) == sorted(CHECK_IDS)  # no id twice, none unregistered
    assert all(0 < len(desc) < 80 for desc in CHECK_IDS.values())
    emitted = [m for db, _ in DATABASE_CASES for m in messages({"default": db})]
    emitted += messages(INSTALLED_APPS=OVERRIDE_ABOVE_US) + messages(INSTALLED_APPS=WITHOUT_US)
    emitted += messages({"default": _split()}) + messages({"default": _edited_split()})
    # the replica checks' ids are emitted by tests/replicas/test_replica_urls.py
    assert {m.id for m in emitted} == set(CHECK_IDS) - set(ids_in[replica_checks])
    assert [m.msg for m in emitted if len(m.msg) >= 80] == []


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


def _edited_split():
    edited = _split()
    edited["NEON"] = {**edited["NEON"], "ALLOW_MISMATCHED_ENDPOINTS": False}
    return edited


def test_a_mismatched_pair_is_reported():
    # allowed by the caller: a warning that can be silenced
    assert ids({"default": _split()}) == ["neon_django.W005"]
    # the same pair written (or edited) by hand: an error
    assert ids({"default": _edited_split()}) == ["neon_django.E007"]
    other_db = dict(GOOD, NEON={**GOOD["NEON"], "DIRECT": {**GOOD["NEON"]["DIRECT"], "NAME": "x"}})
    assert ids({"default": other_db}) == ["neon_django.E007"]


def test_the_endpoint_option_neon_reads_is_not_a_startup_option():
    """``options=endpoint=<id>`` (libpq without SNI) is read by Neon's proxy, not sent on to
    PgBouncer. The check used to look for "-c" in the text, which "ep-cool-..." contains."""
    db = by_hand(
        DISABLE_SERVER_SIDE_CURSORS=True,
        OPTIONS={"sslmode": "require", "options": "endpoint=ep-cool-darkness-123456"},
    )
    assert ids({"default": db}) == ["neon_django.W003"]
    db["OPTIONS"]["options"] += " -c search_path=x"
    assert ids({"default": db}) == ["neon_django.E006", "neon_django.W003"]


def test_a_pair_in_two_regions_is_a_split():
    """The same endpoint id in another region is another endpoint: the rule that resolve()
    applies, which the check used to skip."""
    other_region = DIRECT.replace("us-east-2", "eu-central-1")
    edited = dict(
        GOOD, NEON={**GOOD["NEON"], "DIRECT": {**GOOD["NEON"]["DIRECT"], "HOST": other_region}}
    )
    assert ids({"default": edited}) == ["neon_django.E007"]


def test_each_rule_reads_the_same_in_every_renderer():
    """One rule, one wording: the Django check and the configuration error say the same."""
    from neon_connect import ConfigurationError, resolve

    with pytest.raises(ConfigurationError) as refused:
        resolve(f"postgresql://u:p@{POOLED}/neondb", direct_url=f"postgresql://u:p@{OTHER}/neondb")
    (message,) = messages({"default": _edited_split()})
    assert "different Neon endpoints" in message.msg
    fix = "Copy both from one Neon connection string, or pass allow_mismatched_endpoints=True"
    assert fix in str(message.hint) and fix in str(refused.value)
    assert "name different Neon endpoints (ep-cool-darkness-123456 and ep-other-thing" in (
        str(message.hint)
    )
