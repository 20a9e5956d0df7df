"""neon_django with psycopg2: Django falls back to it when psycopg 3 cannot be imported."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_python

pytestmark = pytest.mark.integration

SCRIPT = """
import json, sys
sys.modules["psycopg"] = None  # psycopg 3 unimportable: Django uses psycopg2
import django
django.setup()
from django.core.management import call_command
from django.db import connection, connections
from django.db.backends.postgresql.psycopg_any import is_psycopg3
import neon_django
from tests.djangoapp.evidence import route
from tests.djangoapp.models import Item

call_command("migrate", verbosity=0)
Item.objects.create(name="pg2")
out = {
    "psycopg3": is_psycopg3,
    "options": sorted(connections["binding"].settings_dict["OPTIONS"]),
    "pooled": route(connection)["direct"] is False,
    "iterated": len(list(Item.objects.iterator(chunk_size=1))) >= 1,
    "binding_alias_works": connections["binding"].cursor().execute("SELECT 1") is None,
}
with neon_django.direct():
    out["direct"] = route(connection)["direct"]
print(json.dumps(out))
"""


def test_config_routing_and_direct_with_psycopg2(neon_local):
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.django_settings",
        "NEON_TESTS_STANDIN": json.dumps(neon_local.env()),
    }
    result = run_python("-c", SCRIPT, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["psycopg3"] is False
    assert "prepare_threshold" not in out["options"]  # dropped: psycopg2 would reject it
    assert out == {
        **out,
        "pooled": True,
        "iterated": True,
        "binding_alias_works": True,
        "direct": True,
    }
