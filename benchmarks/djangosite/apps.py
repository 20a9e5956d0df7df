"""The benchmark site's app. The ASGI close it once prototyped is now neon_django's own
(``neon_django/_conn_max_age.py``), connected by neon_django's ``ready()``."""

from __future__ import annotations

from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "benchmarks.djangosite"
    label = "djangosite"
