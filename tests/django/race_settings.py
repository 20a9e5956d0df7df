"""Settings for concurrent ``migrate`` runs: a fresh database and one 2-second migration."""

from __future__ import annotations

import json
import os

import neon_django

_database = os.environ["NEON_TESTS_RACE_DB"]
_standin: dict[str, str] = json.loads(os.environ["NEON_TESTS_STANDIN"])

SECRET_KEY = "neon-connect-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["neon_django", "tests.django.slowapp.apps.SlowAppConfig"]
DATABASES = {
    "default": neon_django.config(
        env={k: v.replace("/neondb?", f"/{_database}?") for k, v in _standin.items()}
    )
}
