"""Kept connections close at SIGTERM, as Neon advises on elastic platforms (issue 24).

Each case runs a child process (tests/sigterm_child.py) that keeps a connection to the
stand-in's pooler and receives SIGTERM, as Cloud Run stops an instance. PgBouncer's own
client list says whether the connection is still open. The controls
(``close_on_sigterm=False``) keep it open through the server's graceful phase: the issue's
failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from neon_connect import ConfigurationError
from neon_connect._sigterm import close_on_sigterm

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


class Child:
    def __init__(self, neon_local, stack: str, scenario: str, close: str, **env: str) -> None:
        self.tag = uuid.uuid4().hex
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.sigterm_child", stack, scenario, close],
            cwd=ROOT,
            env={**os.environ, **neon_local.env(), "SIGTERM_TAG": self.tag, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.expect("port ").split()[1])
        self.expect("ready")

    def expect(self, prefix: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith(prefix):
            self.process.kill()
            _, err = self.process.communicate(timeout=30)
            raise AssertionError(f"wanted {prefix!r}, got {line!r}; stderr:\n{err}")
        return line

    def term(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def finish(self) -> tuple[int, str]:
        out, err = self.process.communicate("exit\n", timeout=60)
        return self.process.returncode, out + err


def pooler_clients(neon_local) -> set[int]:
    """The client ports PgBouncer holds now (its admin console's ``SHOW CLIENTS``)."""
    with psycopg.connect(neon_local.state.admin_url, autocommit=True) as admin:
        cursor = admin.execute("SHOW CLIENTS")
        columns = [c.name for c in cursor.description]
        return {int(row[columns.index("port")]) for row in cursor.fetchall()}


def gone(neon_local, port: int, *, within: float = 5.0) -> bool:
    """Whether the pooler dropped the client ``port`` within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if port not in pooler_clients(neon_local):
            return True
        time.sleep(0.1)
    return False


STACKS = ["django", "sqlalchemy", "asyncio"]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("close", ["true", "false"])
def test_an_idle_kept_connection_closes_at_sigterm(neon_local, stack, close):
    child = Child(neon_local, stack, "idle", close)
    try:
        assert child.port in pooler_clients(neon_local)
        child.term()
        child.expect("term")  # the server's own handler ran: the signal was handed on
        # the control keeps its connection through the graceful phase
        assert gone(neon_local, child.port, within=3.0 if close == "true" else 1.5) is (
            close == "true"
        )
        opened = child.expect("open ").split()[1]
        assert opened in ({"False", "0"} if close == "true" else {"True", "1"})
    finally:
        child.term()
        child.finish()


@pytest.mark.parametrize("stack", ["django", "sqlalchemy"])
def test_a_transaction_in_flight_commits_then_its_connection_closes(neon_local, stack):
    """SIGTERM in the middle of a transaction: nothing is closed under it; it goes on and
    commits both rows, and the connection closes when it is released."""
    child = Child(neon_local, stack, "busy", "true")
    child.term()
    child.expect("term")
    assert child.expect("open ") == "open True"  # still in use after the signal
    assert child.expect("released") == "released False"  # closed once released
    assert gone(neon_local, child.port)  # the child still runs: its exit closed nothing
    rc, output = child.finish()
    assert rc == 0, output
    with psycopg.connect(neon_local.state.direct_url) as conn:
        rows = conn.execute("SELECT count(*) FROM sigterm_rows WHERE tag = %s", [child.tag])
        assert rows.fetchone() == (2,)  # nothing lost, nothing doubled


@pytest.mark.parametrize("stack", ["django", "sqlalchemy"])
@pytest.mark.parametrize("close", ["true", "false"])
def test_with_no_server_handler_sigterm_still_ends_the_process(neon_local, stack, close):
    """Behind the default disposition, the process ends as SIGTERM ends it (exit status
    -15) in both cases. With the handler the pooler hears a goodbye (``client close
    request``); without it, only the socket's end (``client unexpected eof``)."""
    log = Path(neon_local.state.runtime_dir) / "pgbouncer.log"
    child = Child(neon_local, stack, "default", close)
    child.term()
    rc, output = child.finish()
    assert rc == -signal.SIGTERM, output
    assert "still alive" not in output
    assert gone(neon_local, child.port)
    wanted = "client close request" if close == "true" else "client unexpected eof"
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if f":{child.port} " in line and "closing because" in line
        ]
        if lines:
            break
        time.sleep(0.1)
    assert lines and wanted in lines[-1], lines


def test_auto_is_on_for_an_elastic_platform_only(neon_local):
    assert close_on_sigterm("auto", env={"K_SERVICE": "web"}, where="w") is True
    assert close_on_sigterm("auto", env={"ECS_CONTAINER_METADATA_URI_V4": "x"}, where="w")
    assert close_on_sigterm("auto", env={"FLY_APP_NAME": "a"}, where="w") is False
    assert close_on_sigterm("auto", env={"AWS_LAMBDA_FUNCTION_NAME": "f"}, where="w") is False
    assert close_on_sigterm("auto", env={}, where="w") is False
    child = Child(neon_local, "django", "idle", "auto", K_SERVICE="web")  # Cloud Run
    try:
        child.term()
        child.expect("term")
        assert gone(neon_local, child.port, within=3.0)
    finally:
        child.term()
        child.finish()


def test_a_wrong_value_names_the_option():
    with pytest.raises(ConfigurationError, match=r"config\(close_on_sigterm='yes'\)"):
        close_on_sigterm("yes", env={}, where="neon_django.config")  # type: ignore[arg-type]
    import neon_sqlalchemy

    with pytest.raises(ConfigurationError, match=r"create_engine\(close_on_sigterm=1\)"):
        neon_sqlalchemy.create_engine(
            "postgresql://u:p@ep-x-1-pooler.us-east-2.aws.neon.tech/db",
            close_on_sigterm=1,  # type: ignore[arg-type]
        )


def test_closing_the_idle_keeps_the_pools_limit(neon_local):
    """The closer empties the pool's idle entries, not its count: ``pool.dispose()`` reset the
    overflow while connections were checked out, and the pool then gave out more than its
    size (the review's finding). Called directly here, as the handler calls it."""
    import warnings

    import sqlalchemy as sa

    import neon_sqlalchemy
    from neon_sqlalchemy._events import _close_checked_in

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", neon_sqlalchemy.NeonClientPoolWarning)
        engine = neon_sqlalchemy.create_engine(
            env=neon_local.env(),
            allow_client_pool=True,
            pool_size=2,
            max_overflow=0,
            pool_timeout=1,
        )
    try:
        with engine.connect() as idle:
            idle.execute(sa.text("SELECT 1"))
        busy = engine.connect()
        busy.execute(sa.text("SELECT 1"))
        _close_checked_in(engine.pool)
        assert engine.pool.checkedout() == 1
        other = engine.connect()  # the closed entry connects afresh
        other.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()  # a third is over the limit of 2, as before the close
        other.close()
        busy.close()
    finally:
        engine.dispose()
