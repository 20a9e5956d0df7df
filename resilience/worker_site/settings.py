"""The worker site's settings, on the stand-in named by the environment (``DATABASE_URL``,
``DATABASE_URL_UNPOOLED``).

``NEON_WORKER_SETUP=by-hand`` is the control: what teams write by hand today, Django's own
backend on the URL (pooled, or direct for the ``DirectCommand`` loop), kept for 240 s, with
``CONN_HEALTH_CHECKS`` at Django's default, off. (On, Django pings before the first query
after each ``close_old_connections()``: a round trip per loop that the liveness check does
not pay, and nothing at all for a loop that never calls it.)
"""

from __future__ import annotations

import os

import neon_django

SECRET_KEY = "neon-connect-resilience-workers"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "neon_django",
    "django_tasks",
    "django_tasks.backends.database",
    "resilience.worker_site",
]
DATABASES = {"default": neon_django.config()}  # kept connections: conn_max_age "auto"
if os.environ.get("NEON_WORKER_SETUP") == "by-hand":
    import dj_database_url

    _url = os.environ[os.environ.get("NEON_WORKER_URL", "DATABASE_URL")]
    DATABASES = {"default": dict(dj_database_url.parse(_url, conn_max_age=240))}
TASKS = {"default": {"BACKEND": "django_tasks.backends.database.DatabaseBackend"}}

# db_worker says on stderr when SIGTERM reaches it (``workers.SHUTDOWN``): the harness counts
# only the errors printed before that line. Its handler raises SystemExit wherever the worker
# is, a query in flight too, and django-tasks' own @retry on get_locked() catches SystemExit
# and sends the claim again on that connection, which fails ("another command is already in
# progress", or "can't change 'autocommit' now") with any backend: errors of the stop, not
# of the fault.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django_tasks": {"handlers": ["stderr"], "level": "WARNING"}},
}
