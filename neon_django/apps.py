from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


class NeonDjangoConfig(AppConfig):
    name = "neon_django"
    verbose_name = "Neon connections"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from . import checks as neon_checks
        from .commands import install_direct_commands

        checks.register(neon_checks.check_databases)
        checks.register(neon_checks.check_app_order)
        checks.register(neon_checks.check_direct_commands)
        install_direct_commands()
        setting_changed.connect(_setting_changed, dispatch_uid="neon_django.direct_commands")


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "NEON_DIRECT_COMMANDS":
        from .commands import install_direct_commands

        install_direct_commands()
