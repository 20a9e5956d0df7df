"""The ``NEON_*`` Django settings, read at call time so ``override_settings`` works."""

from __future__ import annotations

from django.conf import settings

__all__ = ["conf"]


class Settings:
    @property
    def NEON_DIRECT_COMMANDS(self) -> tuple[str, ...]:  # noqa: N802 - named after the setting
        """Extra commands (e.g. workers that LISTEN or take advisory locks) to run direct."""
        value = getattr(settings, "NEON_DIRECT_COMMANDS", ())
        if isinstance(value, str):
            return (value,)
        return tuple(value)


conf = Settings()
