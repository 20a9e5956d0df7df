"""The README's replica set-ups work as written, from the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from neon_local.pytest_plugin import NeonLocal
from neon_local.replica import REPLICA_VAR, Replica
from tests.replicas.example_sqlalchemy import session_factory

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import django, json
django.setup()
from django.conf import settings
from django.core.checks import run_checks
from django.db import router
from tests.djangoapp.models import Item
print(json.dumps({
    "aliases": list(settings.DATABASES),
    "mirror": settings.DATABASES["replica_1"]["TEST"]["MIRROR"],
    "checks": [m.id for m in run_checks() if (m.id or "").startswith("neon_django.")],
    "read": router.db_for_read(Item),
    "migrate_replica": router.allow_migrate("replica_1", "djangoapp"),
}))
"""


def test_the_django_settings_example(neon_local: NeonLocal, caught_up: Replica) -> None:
    env = {
        **os.environ,
        **neon_local.env(),
        REPLICA_VAR: caught_up.pooled_url,
        "NEON_TESTS_STANDIN": json.dumps(neon_local.env()),
        "DJANGO_SETTINGS_MODULE": "tests.replicas.example_settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {
        "aliases": ["default", "replica_1"],
        "mirror": "default",
        "checks": [],
        "read": "replica_1",
        "migrate_replica": False,
    }


def test_the_sqlalchemy_example(
    neon_local: NeonLocal, caught_up: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {**neon_local.env(), REPLICA_VAR: caught_up.pooled_url}.items():
        monkeypatch.setenv(key, value)
    Session = session_factory()  # noqa: N806
    with Session() as session:
        assert session.scalar(select(func.pg_is_in_recovery())) is True
    session.primary.dispose()
    for engine in session.replicas:
        engine.dispose()
