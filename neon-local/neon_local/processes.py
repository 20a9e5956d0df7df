"""Running and watching the stand-in's server processes: users, files, ports and pids.

PostgreSQL and PgBouncer both refuse to run as root; when started by root the servers run
as the unprivileged ``postgres`` user (or ``nobody``), so files and commands go through here.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import StandInError

HOST = "127.0.0.1"


def unprivileged_user() -> str | None:
    """The user the servers run as: ``None`` (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise StandInError(
        "running as root but there is no 'postgres' or 'nobody' user to run the servers"
    )


def as_user(run_as: str | None) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a command as ``run_as``."""
    if run_as is None:
        return {}
    entry = pwd.getpwnam(run_as)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def chown(path: Path, run_as: str | None) -> None:
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def can(run_as: str | None, test_flag: str, path: Path) -> bool:
    """Whether ``run_as`` passes ``test -<flag> path`` (reach a folder, run a binary)."""
    probe = subprocess.run(["test", test_flag, str(path)], **as_user(run_as), check=False)
    return probe.returncode == 0


def write_file(path: Path, text: str, *, mode: int, owner: str | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    chown(path, owner)


def raise_fd_limit() -> None:
    """Up to 20,000 open files (or the hard limit), for servers that hold many clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 20000 if hard == resource.RLIM_INFINITY else min(hard, 20000)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(
    cmd: Sequence[str],
    *,
    what: str,
    run_as: str | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a server command in its own session, without our ``PG*`` environment."""
    raise_fd_limit()  # inherited by PgBouncer, which wants a descriptor per client
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    try:
        result = subprocess.run(
            list(cmd),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,  # keep the servers out of the terminal's signals
            timeout=120,
            **as_user(run_as),
        )
    except FileNotFoundError:
        raise StandInError(f"{what}: {cmd[0]} not found") from None
    if check and result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise StandInError(f"{what} failed: {' | '.join(lines) or f'exit {result.returncode}'}")
    return result


def tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " (log: " + " | ".join(line.strip() for line in text) + ")" if text else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a child of ours that exited) counts as gone.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def terminate(pid: int | None) -> None:
    if not pid:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        if wait_dead(pid, wait):
            return
