"""neon_sqlalchemy: engines that route Neon's pooled and direct endpoints by themselves.

engine = neon_sqlalchemy.create_engine()                 # pooled, NullPool, from DATABASE_URL
migrations = neon_sqlalchemy.create_engine(direct=True)  # direct, pre-ping, recycle < 5 min
"""

from __future__ import annotations

from ._engines import NeonClientPoolWarning, create_async_engine, create_engine, endpoint_for
from ._replicas import RoutingSession, create_replica_engines

__all__ = [
    "NeonClientPoolWarning",
    "RoutingSession",
    "create_async_engine",
    "create_engine",
    "create_replica_engines",
    "endpoint_for",
]
