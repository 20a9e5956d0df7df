"""neon_django: pooled for traffic, direct for migrations and sessions, no double pooling.

INSTALLED_APPS = ["neon_django", ...]          # first, so its command overrides win
DATABASES = {"default": neon_django.config()}  # reads the environment via neon_connect
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import NeonSettings, config
from ._replicas import databases

if TYPE_CHECKING:
    from ._routing import direct
    from .management._overrides import DirectCommand
    from .routers import ReplicaRouter

__all__ = ["DirectCommand", "NeonSettings", "ReplicaRouter", "config", "databases", "direct"]


def __getattr__(name: str) -> Any:
    # Imported lazily: settings.py imports this package before Django is set up.
    if name == "direct":
        from ._routing import direct

        return direct
    if name == "DirectCommand":
        from .management._overrides import DirectCommand

        return DirectCommand
    if name == "ReplicaRouter":
        from .routers import ReplicaRouter

        return ReplicaRouter
    raise AttributeError(f"module 'neon_django' has no attribute {name!r}")
