"""Find the PostgreSQL server binaries, PgBouncer and openssl on this machine."""

from __future__ import annotations

import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import StandInError

__all__ = ["Binaries", "find_binaries"]

_INSTALL_HINT = "install them with: sudo apt-get install -y postgresql pgbouncer openssl"


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


def find_binaries() -> Binaries:
    """Locate the binaries, or raise one clear error naming what is missing."""
    bindir = _pg_bindir()
    pgbouncer = os.environ.get("NEON_LOCAL_PGBOUNCER") or shutil.which("pgbouncer")
    if not pgbouncer and os.path.exists("/usr/sbin/pgbouncer"):
        pgbouncer = "/usr/sbin/pgbouncer"
    openssl = shutil.which("openssl")
    missing = []
    if bindir is None or not (bindir / "pg_ctl").exists():
        missing.append("PostgreSQL server (initdb, pg_ctl)")
    if not pgbouncer:
        missing.append("PgBouncer")
    if not openssl:
        missing.append("openssl")
    if missing:
        raise StandInError(f"missing {', '.join(missing)}; {_INSTALL_HINT}")
    assert bindir is not None and pgbouncer and openssl
    return Binaries(pg_bindir=bindir, pgbouncer=Path(pgbouncer), openssl=Path(openssl))
