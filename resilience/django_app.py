"""The ledger write as a Django view, for the scenarios served by gunicorn with threads.

One module is the settings, the URLconf and the WSGI application:
``DJANGO_SETTINGS_MODULE=resilience.django_app gunicorn -k gthread --threads 16
resilience.django_app:application``. ``DATABASES`` come from ``neon_django.config()``
(``DATABASE_URL`` / ``DATABASE_URL_UNPOOLED``). ``POST /write/django`` answers like
:mod:`resilience.app`: ``outcome`` (``acked``, ``connect``, ``tx`` or ``commit``), ``error``
and ``attempts``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

import neon_django

from .load import describe

SECRET_KEY = "neon-connect-resilience"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1"]
ROOT_URLCONF = __name__
MIDDLEWARE: list[str] = []
INSTALLED_APPS = ["neon_django"]
DATABASES = {"default": neon_django.config()}

_retries = threading.local()


class _CountRetries(logging.Handler):
    """neon-connect logs one warning per retried connect attempt; count them per thread."""

    def emit(self, record: logging.LogRecord) -> None:
        _retries.count = getattr(_retries, "count", 0) + 1


_log = logging.getLogger("neon_connect")
_log.addHandler(_CountRetries(logging.WARNING))
_log.propagate = False  # counted, not printed


def write(request: HttpRequest) -> JsonResponse:
    from django.db import connection

    query = request.GET
    args: list[str | int] = [query["run"], query["key"], int(query["client"])]
    sleep = float(query.get("sleep", 0))
    _retries.count = 0

    def answer(outcome: str, exc: BaseException | None = None) -> JsonResponse:
        body: dict[str, Any] = {"outcome": outcome, "attempts": 1 + _retries.count}
        if exc is not None:
            body["error"] = describe(exc)
        return JsonResponse(body)

    try:
        try:
            connection.ensure_connection()
        except Exception as exc:
            return answer("connect", exc)
        try:
            connection.set_autocommit(False)
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO ledger (run, key, client) VALUES (%s, %s, %s)", args)
                if sleep:
                    cursor.execute("SELECT pg_sleep(%s)", [sleep])
        except Exception as exc:
            return answer("tx", exc)
        try:
            connection.commit()
        except Exception as exc:
            return answer("commit", exc)
        return answer("acked")
    finally:
        with contextlib.suppress(Exception):  # a broken connection: nothing to keep
            connection.close()


urlpatterns = [path("write/django", write)]

from django.core.wsgi import get_wsgi_application  # noqa: E402  (the settings are above)

application = get_wsgi_application()
