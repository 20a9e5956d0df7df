"""The README's SQLAlchemy set-up for read replicas, as a function a test calls."""

from __future__ import annotations

from sqlalchemy.orm import sessionmaker

import neon_sqlalchemy
from neon_sqlalchemy import RoutingSession


def session_factory() -> sessionmaker[RoutingSession]:
    primary = neon_sqlalchemy.create_engine()  # DATABASE_URL
    replicas = neon_sqlalchemy.create_replica_engines()  # DATABASE_URL_REPLICA
    make_session = sessionmaker(class_=RoutingSession, primary=primary, replicas=replicas)
    return make_session
