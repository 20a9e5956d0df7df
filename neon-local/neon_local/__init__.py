"""The local stand-in: real PostgreSQL (direct) + real PgBouncer in transaction mode (pooled).

``neon-local up|env|status|down`` or ``python -m neon_local``. Importing this
package is cheap (the CLI and the pytest plugin do it on every start); the stand-in's modules
load when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import PgBouncerTooOld, StandInError

if TYPE_CHECKING:
    from .standin import LocalNeon, StandInState, running

__all__ = [
    "DEFAULT_DIR",
    "LocalNeon",
    "PgBouncerTooOld",
    "StandInError",
    "StandInState",
    "running",
]

DEFAULT_DIR = ".neon-local"
"""The state folder ``neon-local`` uses unless given ``--dir``."""


def __getattr__(name: str) -> Any:
    if name in ("LocalNeon", "StandInState", "running"):
        return getattr(importlib.import_module(".standin", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
