"""The local stand-in: real PostgreSQL (direct) + real PgBouncer in transaction mode (pooled).

``neon-connect local up|env|status|down`` or ``python -m neon_connect.local``.
"""

from __future__ import annotations

from .errors import StandInError
from .standin import DEFAULT_DIR, LocalNeon, StandInState, running

__all__ = ["DEFAULT_DIR", "LocalNeon", "StandInError", "StandInState", "running"]
