"""Settings for Django's ``tests/runtests.py``: both of its aliases through neon_django.

Copied next to Django's ``runtests.py`` by ``tests/django_suite/run.py``, which exports the
stand-in's URLs first. Everything but ``DATABASES`` is what Django's own ``test_sqlite.py``
sets; runtests.py chooses ``INSTALLED_APPS`` itself.
"""

from __future__ import annotations

import os

import neon_django

DATABASES = {
    "default": neon_django.config(),
    "other": neon_django.config(),
}
# one database serves both aliases on Neon; their test databases must differ
DATABASES["other"]["TEST"] = {"NAME": "test_neondb_other"}

SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False

if os.environ.get("NEON_SUITE_BASELINE"):
    # the oracle's oracle: Django's own backend straight to PostgreSQL, for comparison
    import dj_database_url

    for alias in DATABASES:
        DATABASES[alias] = {
            **dj_database_url.parse(os.environ["DATABASE_URL_UNPOOLED"]),
            "TEST": DATABASES[alias].get("TEST", {}),
        }
