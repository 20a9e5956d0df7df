from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class NeonDjangoConfig(AppConfig):
    name = "neon_django"
    verbose_name = "Neon connections"

    def ready(self) -> None:
        from . import checks as neon_checks

        checks.register(neon_checks.check_databases)
        checks.register(neon_checks.check_app_order)
