"""Real workers outside the request cycle go on after a fault: django-tasks' ``db_worker`` on
the pooled endpoint, and a ``DirectCommand`` loop on the direct one, each its own process as
users run them (tests/resilience/worker_site), on a stand-in of their own.

``db_worker`` calls ``close_old_connections()`` once per loop, as Celery's fixup does; with
Django's own backend as teams configure it by hand (kept, health checks at their default, off)
a fault still reaches its next claim, whose error ends the worker. The
``DirectCommand`` loop holds one ``direct()`` session: after a suspend it gets one clear
error, then connects afresh; without the check, every tick after the fault fails.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from neon_local.standin import StandInState, running
from tests.helpers import run_python, start_python
from tests.resilience.test_worker_loops import _suspend, strikes

pytestmark = pytest.mark.integration

SETTINGS = "tests.resilience.worker_site.settings"
BATCH = 5


@pytest.fixture(scope="module")
def own() -> Iterator[StandInState]:
    with running(pool_size=3, max_connections=20) as state:
        run = run_python("-m", "django", "migrate", "-v", "0", env=_env(state), drop=_DROP)
        assert run.returncode == 0, run.stderr
        with psycopg.connect(state.direct_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE worker_ledger (key text NOT NULL)")
        yield state


_DROP = ("DJANGO_", "DATABASE_URL", "NEON_TESTS_MODE", "NEON_TESTS_UNFIXED")


def _env(state: StandInState, *, control: str = "") -> dict[str, str]:
    """The worker site's environment; ``control`` is ``plain`` or ``unfixed`` (see its settings)."""
    env = {**state.env(), "DJANGO_SETTINGS_MODULE": SETTINGS}
    if control:
        env |= {"NEON_TESTS_MODE": control, "NEON_TESTS_UNFIXED": "liveness"}
    return env


def _enqueue(state: StandInState, keys: list[str]) -> None:
    run = run_python("-m", "django", "enqueue", *keys, env=_env(state), drop=_DROP)
    assert run.returncode == 0, run.stderr


def _ledger(state: StandInState, prefix: str) -> dict[str, int]:
    with psycopg.connect(state.direct_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT key, count(*) FROM worker_ledger WHERE key LIKE %s GROUP BY key",
            (prefix + "%",),
        ).fetchall()
    return {key: int(n) for key, n in rows}


def _until(done: Callable[[], bool], worker: subprocess.Popen[str], seconds: float) -> bool:
    """Poll ``done`` until it holds, the worker exits, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and worker.poll() is None:
        if done():
            return True
        time.sleep(0.1)
    return done()


def _db_worker_across(state: StandInState, fault: str, *, control: str = ""):
    """A batch done, the fault, then a second batch: what the worker did, and its output."""
    prefix = f"{fault.split()[0]}-{control or 'fixed'}-{random.randrange(10**9)}:"
    first = [f"{prefix}a{i}" for i in range(BATCH)]
    second = [f"{prefix}b{i}" for i in range(BATCH)]
    worker = start_python(
        "-m",
        "django",
        "db_worker",
        "--interval",
        "0.2",
        "--no-startup-delay",
        env=_env(state, control=control),
        drop=_DROP,
    )
    try:
        _enqueue(state, first)
        assert _until(lambda: len(_ledger(state, prefix)) == BATCH, worker, 60), "no first batch"
        time.sleep(random.uniform(0, 0.2))  # somewhere in the worker's idle loop
        strikes(state)[fault]()
        _enqueue(state, second)
        _until(lambda: len(_ledger(state, prefix)) == 2 * BATCH, worker, 60)
        alive = worker.poll() is None
    finally:
        worker.terminate()  # db_worker stops gracefully on SIGTERM
        _, err = worker.communicate(timeout=30)
    return alive, _ledger(state, prefix), err


@pytest.mark.parametrize("fault", ["pooler restart", "suspend", "server restart"])
def test_django_tasks_db_worker_goes_on_after_a_fault(own, fault):
    alive, ledger, err = _db_worker_across(own, fault)
    assert alive, err
    assert len(ledger) == 2 * BATCH and set(ledger.values()) == {1}, ledger  # none lost, none twice
    assert "Traceback" not in err, err


def test_control_with_djangos_backend_a_pooler_restart_ends_the_worker(own):
    alive, ledger, err = _db_worker_across(own, "pooler restart", control="plain")
    assert not alive
    assert len(ledger) == BATCH, ledger  # the second batch waits for a worker that is gone
    assert "OperationalError" in err, err


def _direct_loop(state: StandInState, *, control: str = "") -> list[str]:
    """The ``DirectCommand`` worker's lines: three ticks, a suspend, then eight more."""
    worker = start_python(
        "-m", "django", "direct_loop", env=_env(state, control=control), drop=_DROP, stdin=True
    )
    assert worker.stdout is not None and worker.stdin is not None
    lines = []
    try:
        while len(lines) < 3:
            lines.append(worker.stdout.readline().strip())
        _suspend(state)
        while len(lines) < 11:
            lines.append(worker.stdout.readline().strip())
    finally:
        _, err = worker.communicate(timeout=30)  # closes stdin: the loop stops
    assert worker.returncode == 0, err
    return lines


def test_a_direct_command_worker_gets_one_clear_error_then_recovers(own):
    lines = _direct_loop(own)
    assert lines[:3] == ["ok"] * 3
    errors = [line for line in lines if line != "ok"]
    assert len(errors) == 1, lines
    assert "the server ended the direct() session" in errors[0]
    assert lines[-1] == "ok"


def test_control_a_direct_command_worker_with_djangos_backend_fails_for_good(own):
    lines = _direct_loop(own, control="unfixed")
    assert lines[:3] == ["ok"] * 3
    assert all(line != "ok" for line in lines[3:]), lines
