"""A site whose only traffic is workers: django-tasks' ``db_worker`` and a ``DirectCommand``
loop, on the stand-in named by the environment (``DATABASE_URL``, ``DATABASE_URL_UNPOOLED``).

The controls:
- ``NEON_TESTS_MODE=plain``: what teams write by hand, Django's own backend on the pooled URL,
  kept, with ``CONN_HEALTH_CHECKS`` at Django's default, off. (On, Django pings before the
  first query after each ``close_old_connections()``: a round trip per loop that the liveness
  check does not pay.)
- ``NEON_TESTS_MODE=unfixed``: neon_django with Django's health check instead of the liveness
  check (tests/django/unfixed_backend, ``NEON_TESTS_UNFIXED=liveness``).
"""

from __future__ import annotations

import os

import neon_django
from tests.driver import choose_django_driver

choose_django_driver()

SECRET_KEY = "neon-connect-worker-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "neon_django",
    "django_tasks",
    "django_tasks.backends.database",
    "tests.resilience.worker_site",
]
DATABASES = {"default": neon_django.config()}  # kept connections: conn_max_age "auto"
if os.environ.get("NEON_TESTS_MODE") == "unfixed":
    DATABASES["default"]["ENGINE"] = "tests.django.unfixed_backend"
elif os.environ.get("NEON_TESTS_MODE") == "plain":
    import dj_database_url

    DATABASES = {
        "default": dict(dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=240))
    }
TASKS = {"default": {"BACKEND": "django_tasks.backends.database.DatabaseBackend"}}
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tasks": {"handlers": ["console"], "level": "WARNING"}},
}
