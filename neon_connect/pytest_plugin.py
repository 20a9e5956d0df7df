"""pytest plugin: the local stand-in as a session fixture, for our tests and yours.

``neon_local`` starts a real PostgreSQL + PgBouncer (transaction mode) pair once per test run
and stops it at the end. Settings modules that need the URLs at import time (Django's) can
call :func:`local_standin` directly: the first caller starts the pair, later ones share it.

ini options: ``neon_local_pool_size`` (PgBouncer ``default_pool_size``, default 3, at least 2
so two clients can be forced onto different server connections) and
``neon_local_max_connections`` (default 60).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from .local.faults import Faults
from .local.standin import StandInState, running

if TYPE_CHECKING:
    import psycopg

__all__ = ["NeonLocal", "local_standin", "neon_local"]

_DEFAULT_POOL_SIZE = 3
_DEFAULT_MAX_CONNECTIONS = 60


@dataclass
class NeonLocal:
    """A running stand-in plus the handles tests need for fault injection and proof."""

    state: StandInState

    @property
    def pooled_url(self) -> str:
        return self.state.pooled_url

    @property
    def direct_url(self) -> str:
        return self.state.direct_url

    @property
    def pool_size(self) -> int:
        return self.state.pool_size

    def env(self) -> dict[str, str]:
        """``DATABASE_URL`` (pooled) and ``DATABASE_URL_UNPOOLED`` (direct)."""
        return self.state.env()

    @property
    def faults(self) -> Faults:
        """Cold starts, suspends, restarts, pool exhaustion (see ``neon_connect.local.faults``)."""
        return Faults(self.state)

    def superuser(self) -> psycopg.Connection[Any]:
        """An autocommit superuser connection to PostgreSQL (``pg_terminate_backend``...)."""
        import psycopg

        return psycopg.connect(self.state.superuser_url, autocommit=True)

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to PgBouncer's admin console."""
        import psycopg

        return psycopg.connect(self.state.admin_url, autocommit=True)

    def show(self, what: str) -> list[dict[str, Any]]:
        """Rows of an admin-console ``SHOW <what>`` as dicts (``STATS``, ``POOLS``, ``SERVERS``...)."""
        with self.admin() as admin, admin.cursor() as cur:
            cur.execute(f"SHOW {what}")
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pooler_transactions(self, database: str = "neondb") -> int:
        """How many transactions PgBouncer has forwarded for ``database`` so far."""
        return sum(
            int(r["total_xact_count"]) for r in self.show("STATS") if r["database"] == database
        )

    def activity(self, database: str | None = None) -> list[dict[str, Any]]:
        """``pg_stat_activity`` client backends, seen by the superuser."""
        with self.superuser() as su, su.cursor() as cur:
            cur.execute(
                "SELECT pid, datname, usename, client_port, state, query, application_name "
                "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                + (" AND datname = %s" if database else ""),
                (database,) if database else None,
            )
            names = [d.name for d in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @contextlib.contextmanager
    def hold_server_connection(self, database: str = "neondb") -> Iterator[int]:
        """Keep one PgBouncer server connection busy in an open transaction.

        PgBouncer hands server connections back LIFO, so one client alone usually gets the
        same backend again, which hides pooler bugs. Holding one forces the next client onto
        another. Yields the held backend's pid.
        """
        import psycopg

        with psycopg.connect(self.state.pooled_url, dbname=database) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            yield int(pid)
            conn.rollback()


_session: contextlib.ExitStack | None = None
_current: NeonLocal | None = None


def local_standin() -> NeonLocal:
    """The stand-in of this process, started on first call and stopped when pytest ends."""
    global _session, _current
    if _current is None:
        pool_size = int(os.environ.get("NEON_LOCAL_POOL_SIZE", _DEFAULT_POOL_SIZE))
        max_connections = int(
            os.environ.get("NEON_LOCAL_MAX_CONNECTIONS", _DEFAULT_MAX_CONNECTIONS)
        )
        stack = contextlib.ExitStack()
        state = stack.enter_context(running(pool_size=pool_size, max_connections=max_connections))
        _session, _current = stack, NeonLocal(state)
    return _current


def _stop() -> None:
    global _session, _current
    if _session is not None:
        _session.close()
    _session, _current = None, None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "neon_local_pool_size",
        "PgBouncer default_pool_size of the stand-in",
        default=str(_DEFAULT_POOL_SIZE),
    )
    parser.addini(
        "neon_local_max_connections",
        "PostgreSQL max_connections of the stand-in",
        default=str(_DEFAULT_MAX_CONNECTIONS),
    )


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("NEON_LOCAL_POOL_SIZE", str(config.getini("neon_local_pool_size")))
    os.environ.setdefault(
        "NEON_LOCAL_MAX_CONNECTIONS", str(config.getini("neon_local_max_connections"))
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop()


def pytest_report_header(config: pytest.Config) -> str:
    from .local.binaries import find_binaries
    from .local.errors import StandInError
    from .local.standin import _version

    try:
        binaries = find_binaries()
    except StandInError as exc:
        return f"neon-connect stand-in: {exc}"
    return (
        f"neon-connect stand-in: PostgreSQL {_version(binaries.postgres)}, "
        f"PgBouncer {_version(binaries.pgbouncer)}"
    )


@pytest.fixture(scope="session")
def neon_local() -> NeonLocal:
    """A running local stand-in shared by the whole test session."""
    return local_standin()
