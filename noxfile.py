"""The version matrix: the whole suite, against the real stand-in, on the versions users run.

    make matrix                  # every session
    .venv/bin/nox -s lowest      # one of them

`make test` stays the quick single-version run; these sessions are what `pyproject.toml`'s
minimums and classifiers are checked against. Virtualenvs are kept between runs (outside the
repository), so a second run only re-installs what changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2024.4.15"
nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.envdir = str(
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "neon-connect" / "nox"
)
nox.options.sessions = ["lowest", "lts", "latest", "psycopg2", "old_pooler", "django_suite"]

EXTRAS = ".[django,sqlalchemy,asyncpg]"
ROOT = Path(__file__).parent
_VERSIONS_CODE = """
import importlib.metadata as m, platform
names = ["Django", "SQLAlchemy", "psycopg", "psycopg2-binary", "asyncpg", "alembic",
         "dj-database-url"]
found = []
for name in names:
    try:
        found.append(f"{name} {m.version(name)}")
    except m.PackageNotFoundError:
        pass
print(", ".join([f"Python {platform.python_version()}", *found]))
"""


def _versions(session: nox.Session) -> str:
    """One line naming the versions this session really installed."""
    return str(session.run("python", "-c", _VERSIONS_CODE, silent=True)).strip()


def _suite(session: nox.Session, *pytest_args: str, env: dict[str, str] | None = None) -> None:
    """Run pytest; a failure names the session and the versions it ran on."""
    versions = _versions(session)
    session.log(f"{session.name}: {versions}")
    try:
        session.run(
            "pytest",
            *pytest_args,
            *session.posargs,
            env={"NEON_MATRIX_SESSION": f"{session.name} ({versions})", **(env or {})},
        )
    except nox.command.CommandFailed:
        session.error(f"session {session.name!r} failed on {versions}")


def _install(session: nox.Session, *requirements: str, constraints: str | None = None) -> None:
    args = ["-e", EXTRAS, "-e", str(ROOT / "neon-local"), "--group", "test", *requirements]
    if constraints is not None:
        args += ["-c", constraints]
    session.install(*args)


@nox.session(python="3.10")
def lowest(session: nox.Session) -> None:
    """Python 3.10 with every runtime dependency at its declared minimum."""
    _install(session, constraints=str(ROOT / "constraints" / "lowest.txt"))
    _suite(session)


@nox.session(python="3.12")
def lts(session: nox.Session) -> None:
    """The long-term-support pair: Django 5.2 and SQLAlchemy 2.0."""
    _install(session, "Django>=5.2,<5.3", "SQLAlchemy[asyncio]>=2.0,<2.1")
    _suite(session)


@nox.session(python="3.13")
def latest(session: nox.Session) -> None:
    """The newest release of everything (Django 6.x needs Python 3.12+)."""
    _install(session, "Django>=6,<7")
    session.install(
        "--upgrade", "Django>=6,<7", "SQLAlchemy", "psycopg[binary]", "asyncpg", "alembic"
    )
    _suite(session)


@nox.session(python="3.11")
def psycopg2(session: nox.Session) -> None:
    """psycopg2 instead of psycopg 3 for the Django and SQLAlchemy paths that support it.

    psycopg 3 stays installed (the core and the stand-in use it); Django is made to load
    psycopg2 (tests/driver.py), and tests of psycopg 3 features are deselected, not skipped.
    SQLAlchemy's psycopg2 engines are tested by name in every session.
    """
    _install(session)
    _suite(session, "-m", "not psycopg3_only", env={"NEON_TESTS_DRIVER": "psycopg2"})


@nox.session(python="3.11")
def old_pooler(session: nox.Session) -> None:
    """Debian 12's PgBouncer 1.18, which does not track prepared statements."""
    _install(session)
    _suite(session, env={"NEON_LOCAL_PGBOUNCER": "/usr/sbin/pgbouncer"})


# Django's own suite through neon_django (tests/django_suite/run.py): the oldest supported
# Django, the LTS and the newest, each on a Python it supports. The extra packages are what its
# labels need beyond the test group (YAML, images); pip fetches the sdist.
@nox.session
@nox.parametrize(
    "python,django",
    [("3.11", "Django>=4.2,<5"), ("3.12", "Django>=5.2,<6"), ("3.13", "Django>=6,<7")],
    ids=["4.2", "5.2", "6"],
)
def django_suite(session: nox.Session, django: str) -> None:
    """Django's own test suite through neon_django: --parallel 2, then --keepdb twice."""
    _install(session, django, "pip", "PyYAML", "Pillow")
    versions = _versions(session)
    session.log(f"{session.name}: {versions}")
    try:
        session.run("python", "-m", "tests.django_suite.run", *session.posargs)
    except nox.command.CommandFailed:
        session.error(f"Django's own suite failed on {versions}")
