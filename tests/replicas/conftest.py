"""A real streaming replica of the session's stand-in, started only when these tests run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from neon_local.pytest_plugin import NeonLocal
from neon_local.replica import Replica, start_replicas


@pytest.fixture(scope="session")
def neon_local_replica(neon_local: NeonLocal) -> Iterator[Replica]:
    """A hot standby of ``neon_local``'s PostgreSQL behind its own PgBouncer (lazily started)."""
    (replica,) = start_replicas(neon_local.state, 1)[-1:]
    yield replica
    replica.stop()


@pytest.fixture
def caught_up(neon_local: NeonLocal, neon_local_replica: Replica) -> Replica:
    """The replica, after it has replayed everything the primary wrote so far."""
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    return neon_local_replica
