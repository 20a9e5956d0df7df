"""Find the PostgreSQL server binaries, PgBouncer and openssl on this machine.

PgBouncer: an explicit choice (``--pgbouncer`` or ``NEON_LOCAL_PGBOUNCER``) wins, whatever its
version (the test matrix runs Debian's 1.18 on purpose). Otherwise the first PgBouncer >= 1.22
(the line Neon runs) among the one built into the cache (``neon-local up`` or
``scripts/ensure-system-deps``), the one on the PATH and Debian's ``/usr/sbin/pgbouncer``.
Only an older one found is refused with :class:`PgBouncerTooOld`: a stand-in that silently ran
1.18 would pass tests that fail on Neon.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import PgBouncerTooOld, StandInError

__all__ = [
    "CACHED_PGBOUNCER_VERSION",
    "NEON_PGBOUNCER",
    "Binaries",
    "cached_pgbouncer",
    "find_binaries",
    "parse_version",
    "version_of",
]

_INSTALL_HINT = "install them with: sudo apt-get install -y postgresql openssl"

CACHED_PGBOUNCER_VERSION = "1.24.1"
"""The PgBouncer ``scripts/ensure-system-deps`` builds when no PgBouncer >= 1.22 is installed."""

NEON_PGBOUNCER = (1, 22)
"""Neon's pooled endpoint runs PgBouncer >= 1.22, which tracks protocol-level prepared statements."""


@dataclass(frozen=True)
class Binaries:
    pg_bindir: Path
    pgbouncer: Path
    openssl: Path

    @property
    def initdb(self) -> Path:
        return self.pg_bindir / "initdb"

    @property
    def pg_ctl(self) -> Path:
        return self.pg_bindir / "pg_ctl"

    @property
    def postgres(self) -> Path:
        return self.pg_bindir / "postgres"


def parse_version(version: str) -> tuple[int, ...]:
    """``"1.24.1"`` -> ``(1, 24, 1)``; ``()`` for anything unparsable."""
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


@functools.cache
def version_of(binary: Path) -> str:
    """The version a server binary reports with ``--version`` (``"unknown"`` if it says none)."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, check=False, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    words = out.splitlines()[0].split() if out else []
    return next((w for w in words if w[:1].isdigit()), "unknown")


def cached_pgbouncer() -> Path:
    """Where ``scripts/ensure-system-deps`` builds PgBouncer (the same rule as the script)."""
    cache = os.environ.get("NEON_CONNECT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "neon-connect"
    )
    return Path(cache) / f"pgbouncer-{CACHED_PGBOUNCER_VERSION}" / "bin" / "pgbouncer"


def _pg_bindir() -> Path | None:
    explicit = os.environ.get("NEON_LOCAL_PG_BINDIR")
    if explicit:
        return Path(explicit)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(os.path.realpath(on_path)).parent
    # Debian keeps the server binaries off PATH, one folder per major version.
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name or 0))
    return Path(newest).parent


def _pgbouncer(explicit: str | os.PathLike[str] | None) -> Path:
    chosen = explicit or os.environ.get("NEON_LOCAL_PGBOUNCER")
    if chosen:
        path = Path(chosen) if os.sep in str(chosen) else Path(shutil.which(chosen) or chosen)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StandInError(
                f"PgBouncer {str(chosen)!r} (from --pgbouncer or NEON_LOCAL_PGBOUNCER) "
                "is not an executable file; give the path of a pgbouncer binary"
            )
        return path
    candidates: list[Path] = []
    for found in (str(cached_pgbouncer()), shutil.which("pgbouncer"), "/usr/sbin/pgbouncer"):
        if found and os.access(found, os.X_OK) and Path(found) not in candidates:
            candidates.append(Path(found))
    current = [c for c in candidates if parse_version(version_of(c)) >= NEON_PGBOUNCER]
    if current:
        return current[0]
    found = ", ".join(f"{version_of(c)} at {c}" for c in candidates) or "none"
    raise PgBouncerTooOld(
        f"the stand-in needs PgBouncer >= 1.22, the line Neon runs (it tracks prepared "
        f"statements); found {found}. Run: neon-local up (it builds "
        f"{CACHED_PGBOUNCER_VERSION} into {cached_pgbouncer().parent.parent} once), or set "
        "NEON_LOCAL_PGBOUNCER to the PgBouncer to use"
    )


def find_binaries(*, pgbouncer: str | os.PathLike[str] | None = None) -> Binaries:
    """Locate the binaries, or raise one clear error naming what is missing."""
    bindir = _pg_bindir()
    openssl = shutil.which("openssl")
    missing = []
    if bindir is None or not (bindir / "pg_ctl").exists():
        missing.append("PostgreSQL server (initdb, pg_ctl)")
    if not openssl:
        missing.append("openssl")
    if missing:
        raise StandInError(f"missing {', '.join(missing)}; {_INSTALL_HINT}")
    assert bindir is not None and openssl
    return Binaries(pg_bindir=bindir, pgbouncer=_pgbouncer(pgbouncer), openssl=Path(openssl))
