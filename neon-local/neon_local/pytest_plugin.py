"""pytest plugin: the local stand-in as a session fixture, for our tests and yours.

``neon_local`` starts a real PostgreSQL + PgBouncer (transaction mode) pair once per test run
and stops it at the end. Settings modules that need the URLs at import time (Django's) can
call :func:`local_standin` directly: the first caller starts the pair, later ones share it.

Registered for every pytest run (entry point ``pytest11``) but lazy: until something asks for
the stand-in it imports nothing more, starts nothing and prints nothing. Its header line (or,
when a test started it later, a summary line) names the PostgreSQL and PgBouncer versions.

ini options, read with ``config.getini`` as soon as pytest has read its ini file (so they also
reach a settings module that starts the stand-in while pytest-django loads it); a
``NEON_LOCAL_*`` environment variable of the same name overrides each:

- ``neon_local_pool_size``: PgBouncer ``default_pool_size`` (default 3, at least 2 so two
  clients can be forced onto different server connections);
- ``neon_local_max_connections``: PostgreSQL ``max_connections`` (default 60);
- ``neon_local_pgbouncer``: the PgBouncer binary (default: the newest >= 1.22 found, see
  ``neon_local.binaries``); ``NEON_LOCAL_PGBOUNCER=/usr/sbin/pgbouncer`` runs a whole
  session on Debian 12's 1.18, the old pooler.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import psycopg

    from .faults import Faults
    from .standin import StandInState

__all__ = ["NeonLocal", "local_standin", "neon_local", "planned_standin_env"]

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

    @property
    def pgbouncer_version(self) -> str:
        return self.state.pgbouncer_version

    @property
    def tracks_prepared_statements(self) -> bool:
        """Whether the pooler runs with ``max_prepared_statements`` > 0 (PgBouncer >= 1.22),
        so protocol-level prepared statements survive switching server connections."""
        return self.state.max_prepared_statements > 0

    def describe(self) -> str:
        """``PostgreSQL 15.x, PgBouncer 1.24.1 (max_prepared_statements 1000)``."""
        return (
            f"PostgreSQL {self.state.pg_version}, PgBouncer {self.state.pgbouncer_version} "
            f"(max_prepared_statements {self.state.max_prepared_statements})"
        )

    def env(self) -> dict[str, str]:
        """``DATABASE_URL`` (pooled) and ``DATABASE_URL_UNPOOLED`` (direct)."""
        return self.state.env()

    @property
    def faults(self) -> Faults:
        """Cold starts, suspends, restarts, pool exhaustion (see ``neon_local.faults``)."""
        from .faults import Faults

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

    def prepared_statement_binds(self, database: str = "neondb") -> int:
        """How many Binds of named (prepared) statements PgBouncer has seen for ``database``:
        proof that prepares really happen. Only PgBouncer >= 1.22 counts them (0 before)."""
        return sum(
            int(r.get("total_bind_count", 0))
            for r in self.show("STATS")
            if r["database"] == database
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
_planned: StandInState | None = None
_config: pytest.Config | None = None
_OPTIONS = {
    # ini name: (environment variable, default, help)
    "neon_local_pool_size": (
        "NEON_LOCAL_POOL_SIZE",
        str(_DEFAULT_POOL_SIZE),
        "PgBouncer default_pool_size of the stand-in",
    ),
    "neon_local_max_connections": (
        "NEON_LOCAL_MAX_CONNECTIONS",
        str(_DEFAULT_MAX_CONNECTIONS),
        "PostgreSQL max_connections of the stand-in",
    ),
    "neon_local_pgbouncer": (
        "NEON_LOCAL_PGBOUNCER",
        "",
        "PgBouncer binary of the stand-in (default: the newest >= 1.22 found)",
    ),
    "neon_local_proxy": (
        "NEON_LOCAL_PROXY",
        "on",
        "'off' sends the stand-in's URLs straight to PgBouncer and PostgreSQL, bypassing "
        "its Neon-like proxy (direct TLS, channel binding)",
    ),
}


def _option(name: str) -> str:
    """An option's value: its environment variable, else the ini value, else the default."""
    env, default, _ = _OPTIONS[name]
    if os.environ.get(env):
        return os.environ[env]
    if _config is not None:
        return str(_config.getini(name) or default)
    return default


def _int_option(name: str) -> int:
    value = _option(name)
    try:
        return int(value)
    except ValueError:
        env = _OPTIONS[name][0]
        raise ValueError(f"{name} (or {env}) must be a whole number, got {value!r}") from None


def _proxy_option() -> bool:
    from .standin import proxy_wanted

    return proxy_wanted(_option("neon_local_proxy"))


def planned_standin_env() -> dict[str, str]:
    """The stand-in's ``DATABASE_URL`` pair for a settings module read at import time,
    without starting it: its ports and passwords are chosen now, and it starts before the
    first test not marked ``pure`` (or at :func:`local_standin`). So ``pytest tests/core``
    (pure tests only) starts no process at all."""
    global _planned
    if _current is not None:
        return _current.env()
    if _planned is None:
        from .standin import plan

        _planned = plan(
            pool_size=_int_option("neon_local_pool_size"),
            max_connections=_int_option("neon_local_max_connections"),
            proxy=_proxy_option(),
        )
    return _planned.env()


def local_standin() -> NeonLocal:
    """The stand-in of this process, started on first call and stopped when pytest ends."""
    global _session, _current
    if _current is None:
        from .standin import planned_options, running

        options: dict[str, Any] = (
            planned_options(_planned)
            if _planned is not None
            else {
                "pool_size": _int_option("neon_local_pool_size"),
                "max_connections": _int_option("neon_local_max_connections"),
                "proxy": _proxy_option(),
            }
        )
        stack = contextlib.ExitStack()
        state = stack.enter_context(
            running(pgbouncer=_option("neon_local_pgbouncer") or None, **options)
        )
        atexit.register(_stop)  # a settings module may start it outside any pytest run
        _session, _current = stack, NeonLocal(state)
    return _current


def _stop() -> None:
    global _session, _current
    if _session is not None:
        _session.close()
    _session, _current = None, None


def pytest_addoption(parser: pytest.Parser) -> None:
    for name, (_, default, help_text) in _OPTIONS.items():
        parser.addini(name, help_text, default=default)


def _register_marker(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pure: needs no database, so a planned stand-in is not started for it"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Remember the config before pytest-django imports a settings module that may start us."""
    global _config
    _config = early_config


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config
    _register_marker(config)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start a planned stand-in before the first test that may need it (any not ``pure``)."""
    if _planned is not None and _current is None and item.get_closest_marker("pure") is None:
        local_standin()


def pytest_unconfigure(config: pytest.Config) -> None:
    global _config
    _stop()
    _config = None


_IN_HEADER = pytest.StashKey[bool]()


def pytest_report_header(config: pytest.Config) -> str | None:
    """Names the versions when the stand-in already runs (a settings module started it)."""
    if _current is None:
        return None
    config.stash[_IN_HEADER] = True
    return f"neon-connect stand-in: {_current.describe()}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Names the versions at the end when a test, not a settings module, started the stand-in."""
    if _current is not None and not terminalreporter.config.stash.get(_IN_HEADER, False):
        terminalreporter.write_line(f"neon-connect stand-in: {_current.describe()}")


@pytest.fixture(scope="session")
def neon_local() -> NeonLocal:
    """A running local stand-in shared by the whole test session."""
    return local_standin()
