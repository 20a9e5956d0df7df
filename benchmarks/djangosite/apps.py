"""A prototype of the ASGI rule proposed for neon_django (measured as ``asgi_neon_240_fix``)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connections

PROTOTYPE_SUFFIX = "_fix"


def close_after_asgi_request(sender: Any, **kwargs: Any) -> None:
    """Under ASGI each request has its own connections: keep none past the request.

    Django sends ``request_finished`` from the handler that served the request; under ASGI it
    runs in the request's context, so ``connections`` are that request's. Limited here to the
    aliases ending in ``_fix`` so the other configurations keep Django's behaviour.
    """
    if not (isinstance(sender, type) and issubclass(sender, ASGIHandler)):
        return
    for connection in connections.all(initialized_only=True):
        if connection.alias.endswith(PROTOTYPE_SUFFIX):
            connection.close()


class BenchConfig(AppConfig):
    name = "benchmarks.djangosite"
    label = "djangosite"

    def ready(self) -> None:
        request_finished.connect(close_after_asgi_request)
