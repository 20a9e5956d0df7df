"""The stand-in's TLS material: one self-signed certificate both servers present (like Neon,
the endpoints accept TLS only). Clients use ``sslmode=require``, so nothing is verified."""

from __future__ import annotations

import os
from pathlib import Path

from .processes import HOST, chown, run


def make_certificate(openssl: Path, runtime: Path, *, owner: str | None) -> None:
    """Write ``server.key`` (mode 600) and ``server.crt`` into ``runtime``, owned by ``owner``."""
    run(
        [
            str(openssl), "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30",
            "-subj", "/CN=localhost",
            "-addext", f"subjectAltName=IP:{HOST},DNS:localhost",
            "-keyout", str(runtime / "server.key"), "-out", str(runtime / "server.crt"),
        ],
        what="openssl (making the TLS certificate)",
    )  # fmt: skip
    os.chmod(runtime / "server.key", 0o600)
    for name in ("server.key", "server.crt"):
        chown(runtime / name, owner)
