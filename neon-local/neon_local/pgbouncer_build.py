"""Build the PgBouncer line Neon runs (>= 1.22) into the cache, from a wheel install.

Debian 12 and Ubuntu 22.04 ship PgBouncer 1.18, which does not track protocol-level prepared
statements; a stand-in on it would pass tests that fail on Neon. ``neon-local up``
builds 1.24.1 once (about 30 s) from Debian's source tarball, checked against its SHA-256,
into the same cache folder ``scripts/ensure-system-deps`` uses. What the build needs (a C
compiler, make, pkg-config and the libevent, c-ares and OpenSSL headers) is checked first, so
a machine without them gets the one ``apt-get`` line instead of a compiler error.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .binaries import CACHED_PGBOUNCER_VERSION, cached_pgbouncer
from .errors import StandInError

__all__ = ["BUILD_PACKAGES", "SOURCE_SHA256", "SOURCE_URL", "build_pgbouncer", "missing_tools"]

SOURCE_URL = (
    "https://deb.debian.org/debian/pool/main/p/pgbouncer/"
    f"pgbouncer_{CACHED_PGBOUNCER_VERSION}.orig.tar.gz"
)
SOURCE_SHA256 = "da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0"
"""Of Debian 13's ``pgbouncer_1.24.1.orig.tar.gz`` (the upstream release tarball)."""

BUILD_PACKAGES = "build-essential pkg-config libevent-dev libc-ares-dev libssl-dev"
_PKG_CONFIG_MODULES = ("libevent", "libcares", "openssl")


def missing_tools() -> list[str]:
    """What the build needs and this machine lacks (empty when it can build)."""
    missing = [tool for tool in ("cc", "make", "pkg-config") if not shutil.which(tool)]
    if "pkg-config" not in missing:
        for module in _PKG_CONFIG_MODULES:
            found = subprocess.run(
                ["pkg-config", "--exists", module], capture_output=True, check=False
            )
            if found.returncode != 0:
                missing.append(f"{module} headers")
    return missing


def build_pgbouncer(*, progress: Callable[[str], None] = lambda line: None) -> Path:
    """Download, check, build and install PgBouncer into the cache; return the binary.

    Already built: returned at once. Anything missing or failing raises one
    :class:`StandInError` that says what to install or run instead.
    """
    target = cached_pgbouncer()
    if target.is_file() and os.access(target, os.X_OK):
        return target
    missing = missing_tools()
    if missing:
        raise StandInError(
            f"cannot build PgBouncer {CACHED_PGBOUNCER_VERSION}: missing {', '.join(missing)}; "
            f"install them with: sudo apt-get install -y {BUILD_PACKAGES} "
            "(or set NEON_LOCAL_PGBOUNCER to a PgBouncer >= 1.22 you have)"
        )
    prefix = target.parent.parent
    with tempfile.TemporaryDirectory(prefix="neon-pgbouncer-build-") as work:
        tarball = Path(work) / "pgbouncer.tar.gz"
        progress(f"downloading PgBouncer {CACHED_PGBOUNCER_VERSION} source from {SOURCE_URL}")
        try:
            with urllib.request.urlopen(SOURCE_URL, timeout=60) as response:  # noqa: S310
                tarball.write_bytes(response.read())
        except OSError as error:
            raise StandInError(
                f"cannot download {SOURCE_URL} ({error}); download it by hand, or set "
                "NEON_LOCAL_PGBOUNCER to a PgBouncer >= 1.22 you have"
            ) from None
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != SOURCE_SHA256:
            raise StandInError(
                f"{SOURCE_URL} has SHA-256 {digest}, expected {SOURCE_SHA256}; not building it"
            )
        with tarfile.open(tarball) as archive:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: no links out, no devices
                archive.extractall(work, filter="data")
            else:  # pragma: no cover - older patch releases; the digest was checked above
                archive.extractall(work)  # noqa: S202
        source = Path(work) / f"pgbouncer-{CACHED_PGBOUNCER_VERSION}"
        log = Path(work) / "build.log"
        for step, command in (
            ("configuring", ["./configure", f"--prefix={prefix}"]),
            ("compiling (about 20 s)", ["make", f"-j{os.cpu_count() or 1}"]),
            ("installing into " + str(prefix), ["make", "install"]),
        ):
            progress(f"{step}")
            with log.open("a") as out:
                done = subprocess.run(
                    command, cwd=source, stdout=out, stderr=subprocess.STDOUT, check=False
                )
            if done.returncode != 0:
                tail = "".join(log.read_text(errors="replace").splitlines(True)[-8:])
                raise StandInError(
                    f"building PgBouncer failed while {step.split(' (')[0]}:\n{tail}"
                    f"install the build tools with: sudo apt-get install -y {BUILD_PACKAGES}"
                )
    progress(f"built {target}")
    return target
