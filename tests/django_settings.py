"""Django settings for the test suite: every alias points at the local stand-in.

The stand-in's URLs are passed explicitly (never the developer's own DATABASE_URL), and
handed to subprocesses through NEON_TESTS_STANDIN so they share the same pair.
"""

from __future__ import annotations

import json
import os

import neon_django
from tests.driver import DJANGO_DRIVER, choose_django_driver

choose_django_driver()  # psycopg2 in the matrix's psycopg2 session, before config() asks Django

if "NEON_TESTS_STANDIN" not in os.environ:
    # The URLs now; the stand-in starts before the first test that is not marked pure.
    from neon_local.pytest_plugin import planned_standin_env

    os.environ["NEON_TESTS_STANDIN"] = json.dumps(planned_standin_env())
STANDIN: dict[str, str] = json.loads(os.environ["NEON_TESTS_STANDIN"])
_test_name = os.environ.get("NEON_TESTS_TEST_DB")

SECRET_KEY = "neon-connect-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.djangoapp.urls"
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "neon_django",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.postgres",
    "tests.djangoapp",
]

DATABASES = {
    "default": neon_django.config(
        env=STANDIN, test_options={"NAME": _test_name} if _test_name else None
    ),
    # psycopg's server-side binding (which prepares asking for) at the pooler, prepares off
    "binding": neon_django.config(env=STANDIN, options={"server_side_binding": True}),
    # persistent connections with health checks
    "persistent": neon_django.config(env=STANDIN, conn_max_age=60),
}

if os.environ.get("NEON_TESTS_MODE") == "plain":
    # What teams write by hand today: Django's own backend on the pooled URL.
    import dj_database_url

    DATABASES = {"default": dict(dj_database_url.parse(STANDIN["DATABASE_URL"]))}
    if _test_name:
        DATABASES["default"]["TEST"] = {"NAME": _test_name}
else:
    import dj_database_url

    if os.environ.get("NEON_TESTS_MODE") == "unfixed":  # the control of the test life cycle
        DATABASES["default"]["ENGINE"] = "tests.django.unfixed_backend"

    # The same, as a second alias sharing the test database, for side-by-side failures.
    handwritten = dict(dj_database_url.parse(STANDIN["DATABASE_URL"]))
    if DJANGO_DRIVER == "psycopg":  # psycopg 3's prepares; psycopg2 has neither option
        handwritten["OPTIONS"].update(server_side_binding=True, prepare_threshold=1)
    handwritten["TEST"] = {"MIRROR": "default"}
    DATABASES["handwritten"] = handwritten  # type: ignore[assignment]
    # The same prepares, declared safe: for poolers that track them (PgBouncer >= 1.22).
    DATABASES["prepared"] = neon_django.config(
        env=STANDIN,
        options={"server_side_binding": True, "prepare_threshold": 1},
        prepared_statements=True,
    )
    DATABASES["prepared"]["TEST"] = {"MIRROR": "default"}
