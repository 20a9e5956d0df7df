"""Settings: one DATABASES alias per configuration measured, built the way each user writes it.

``BENCH_DJANGO`` maps an alias to ``{"kind": ..., "url": ..., "direct_url": ...}``; every
alias sets ``application_name`` to its own name so PgBouncer's ``SHOW CLIENTS`` tells them apart.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dj_database_url

import neon_django

SECRET_KEY = "neon-connect-benchmarks"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchmarks.djangosite.views"
MIDDLEWARE: list[str] = []
INSTALLED_APPS = ["neon_django", "benchmarks.djangosite"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING_CONFIG = None


def database(alias: str, kind: str, url: str, direct_url: str) -> dict[str, Any]:
    """One configuration, as its users write it."""
    env = {"DATABASE_URL": url, "DATABASE_URL_UNPOOLED": direct_url}
    name = {"application_name": alias}
    if kind == "neon":  # per request: the old default, kept as the reference it was
        return neon_django.config(env=env, options=name, conn_max_age=0)
    if kind == "neon_default":  # neon_django.config() as shipped: conn_max_age="auto"
        return neon_django.config(env=env, options=name)
    if kind == "neon_persistent":  # persistent connections to the pooler, under the suspend
        return neon_django.config(env=env, options=name, conn_max_age=240, conn_health_checks=True)
    if kind.endswith("+stock"):  # the same settings on Django's own backend (overhead)
        settings = database(alias, kind.removesuffix("+stock"), url, direct_url)
        settings.pop("NEON")
        return {**settings, "ENGINE": "django.db.backends.postgresql"}
    if kind.endswith("+bare"):  # the same on Django's own backend with no health check at all
        settings = database(alias, kind.removesuffix("+bare") + "+stock", url, direct_url)
        return {**settings, "CONN_HEALTH_CHECKS": False}
    if kind == "guide":  # Neon's Django guide: pooled DATABASE_URL, dj-database-url
        settings = dict(dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True))
    elif kind == "direct":  # stock Django on the direct endpoint (``url`` is direct here)
        settings = dict(dj_database_url.parse(url))
    else:
        raise ValueError(f"BENCH_DJANGO: unknown kind {kind!r} for alias {alias!r}")
    settings["OPTIONS"] = {**settings.get("OPTIONS", {}), **name}
    return settings


_SPEC: dict[str, dict[str, str]] = json.loads(os.environ.get("BENCH_DJANGO", "{}"))
DATABASES = {alias: database(alias, **spec) for alias, spec in _SPEC.items()}
if DATABASES and "default" not in DATABASES:
    DATABASES["default"] = DATABASES[next(iter(DATABASES))]
