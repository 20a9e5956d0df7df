from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.core.signals import request_finished

__all__ = ["NeonDjangoConfig"]


class NeonDjangoConfig(AppConfig):
    name = "neon_django"
    verbose_name = "Neon connections"

    def ready(self) -> None:
        from . import _checks as neon_checks
        from ._conn_max_age import close_after_asgi_request

        checks.register(neon_checks.check_databases)
        checks.register(neon_checks.check_app_order)
        request_finished.connect(close_after_asgi_request, dispatch_uid="neon_django.asgi_close")
