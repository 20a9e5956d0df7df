"""Settings for Django's ``tests/runtests.py``: both of its aliases through neon_django.

Copied next to Django's ``runtests.py`` by ``tests/django_suite/run.py``, which exports the
stand-in's URLs first. Everything but ``DATABASES`` comes from that Django's own
``test_sqlite.py`` (``DEFAULT_AUTO_FIELD`` differs between versions); runtests.py chooses
``INSTALLED_APPS`` itself.
"""

from __future__ import annotations

import os

from django.core.checks.registry import registry
from test_sqlite import *  # noqa: F403  # Django's own test settings, beside runtests.py

import neon_django
import neon_django.backend._checks  # noqa: F401  # registers E010 now, so the discard below holds
from neon_django._checks import check_app_installed

DATABASES = {
    "default": neon_django.config(),
    "other": neon_django.config(),
}
# runtests.py chooses INSTALLED_APPS (without neon_django) and SILENCED_SYSTEM_CHECKS itself,
# and its test databases are routed by the backend's creation class: neon_django.E010 (the
# app missing, so `manage.py migrate` would be Django's own, on the pooler) does not apply.
# SILENCED_SYSTEM_CHECKS cannot say so (runtests.py overwrites it): the check is taken out of
# the registry, after config() and the backend's checks module have registered it.
registry.registered_checks.discard(check_app_installed)
# one database serves both aliases on Neon; their test databases must differ
DATABASES["other"]["TEST"] = {"NAME": "test_neondb_other"}

if os.environ.get("NEON_SUITE_BASELINE"):
    # the oracle's oracle: Django's own backend straight to PostgreSQL, for comparison
    import dj_database_url

    for alias in DATABASES:
        DATABASES[alias] = {
            **dj_database_url.parse(os.environ["DATABASE_URL_UNPOOLED"]),
            "TEST": DATABASES[alias].get("TEST", {}),
        }
