"""A one-view Django site for ``test_persistent.py``, served by uvicorn (``:asgi``) or gunicorn
(``:wsgi``) in a subprocess, on the stand-in named by ``NEON_TESTS_STANDIN``.

``PERSISTENT_SITE`` (JSON) chooses ``application_name`` (how the test finds this site's clients
at PgBouncer), extra ``config()`` keywords, and whether ``neon_django`` is installed (its
``ready()`` connects the ASGI close). The cyclic garbage collector is off: a leaked connection
otherwise closes at a random later time, and the test counts what nothing else closed.
"""

from __future__ import annotations

import gc
import json
import os
import threading
from typing import Any

import django
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.db.backends.signals import connection_created
from django.http import HttpRequest, JsonResponse
from django.urls import path

import neon_django

gc.disable()
SPEC: dict[str, Any] = json.loads(os.environ["PERSISTENT_SITE"])
STANDIN: dict[str, str] = json.loads(os.environ["NEON_TESTS_STANDIN"])
_connects = 0
_lock = threading.Lock()


def _count_connect(sender: Any, **kwargs: Any) -> None:
    global _connects
    with _lock:
        _connects += 1


def view(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"connects": _connects})


urlpatterns = [path("", view)]
settings.configure(
    SECRET_KEY="neon-connect-tests",
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=["neon_django"] if SPEC["neon_django_app"] else [],
    DATABASES={
        "default": neon_django.config(
            env=STANDIN, options={"application_name": SPEC["app"]}, **SPEC["config"]
        )
    },
)
django.setup()
connection_created.connect(_count_connect)
asgi = get_asgi_application()
wsgi = get_wsgi_application()
