"""One way to run a Python subprocess in tests (the test's interpreter, text output, a timeout),
and one way to add a Django alias for a test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
"""The repository root (the default working directory)."""


def start_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str = ROOT,
    drop: tuple[str, ...] = (),
    stdin: bool = False,
) -> subprocess.Popen[str]:
    """Start ``python *args`` with this process's environment, minus variables starting with
    one of ``drop``, plus ``env``; stdout and stderr (and stdin if asked) are text pipes."""
    base = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=cwd,
        env={**base, **(env or {})},
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str = ROOT,
    drop: tuple[str, ...] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """:func:`start_python`, then wait for it (killing it after ``timeout`` seconds)."""
    proc = start_python(*args, env=env, cwd=cwd, drop=drop)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def django_alias(alias: str, settings: dict[str, Any], cls: type | None = None) -> Iterator[Any]:
    """``DATABASES[alias]`` added for the block (Django's receivers look aliases up by name);
    ``cls`` swaps the backend's class, for controls that take one behaviour out."""
    from django.db import connections

    # Django fills an alias's defaults when it reads DATABASES; this one comes later
    connections.settings[alias] = connections.configure_settings({"default": {}, alias: settings})[
        alias
    ]
    db = connections[alias]
    if cls is not None:
        db.__class__ = cls
    try:
        yield db
    finally:
        db.close()
        del connections[alias]
        del connections.settings[alias]


def closed_local_port() -> int:
    """A port on 127.0.0.1 nothing listens on and no server of this test process answered on:
    the kernel hands ports out again, and one a stopped test server used keeps neon-connect's
    full connect retry (20 s) by design (``_retry.is_local_refusal``)."""
    import socket

    from neon_connect import _retry

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if all(answered[1] != port for answered in _retry._ANSWERED):
            return port
