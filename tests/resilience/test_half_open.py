"""A half-open connection (resilience/half_open.py): the link between a Django worker and the
pooler goes silent, and the gateway between them forgets the flow. Nothing arrives on the
worker's socket, so no socket check can see it; the TCP keepalives and ``tcp_user_timeout``
that neon-connect sets by default must. The worker runs in a network namespace of its own;
the four values are scaled from 30 s, 10 s, 3 and 60 s down to 1 s, 1 s, 2 and 3 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from neon_local.standin import StandInState
from resilience import half_open
from resilience.half_open import Island, Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SILENCE_S = 5.0  # the scaled keepalives end a silent connection after ~3 s
WAIT_S = 20.0  # what a tick may take when nothing bounds it but the test


@pytest.fixture(scope="module")
def isle() -> Iterator[Island]:
    with half_open.island() as made:
        yield made


def _half_open_while_idle(isle: Island, worker: Worker) -> None:
    """The link goes silent, the gateway forgets the flow, the worker sits idle; then the
    link is back, and the worker's old flow meets a reset on its next segment."""
    isle.silence()
    try:
        worker.relay.forget()
        time.sleep(SILENCE_S)
    finally:
        isle.speak()


def _ok(worker: Worker) -> dict[str, object]:
    outcome = worker.tick(WAIT_S)
    assert outcome is not None, "the tick did not come back"
    return outcome


def test_an_idle_worker_on_a_half_open_connection_goes_on_without_an_error(
    standin: StandInState, isle: Island
) -> None:
    with half_open.worker(standin, isle) as worker:
        assert _ok(worker)["ok"]
        _half_open_while_idle(isle, worker)
        after = [_ok(worker) for _ in range(3)]
    assert [outcome["error"] for outcome in after] == ["", "", ""]


def test_control_by_hand_an_idle_half_open_connection_fails_every_tick(
    standin: StandInState, isle: Island
) -> None:
    with half_open.worker(standin, isle, by_hand=True) as worker:
        assert _ok(worker)["ok"]
        _half_open_while_idle(isle, worker)
        after = [_ok(worker) for _ in range(3)]
    assert not any(outcome["ok"] for outcome in after)
    assert "server closed the connection unexpectedly" in str(after[0]["error"])


def test_control_without_keepalives_the_socket_check_cannot_see_it(
    standin: StandInState, isle: Island
) -> None:
    """The liveness check alone passes the connection as alive: nothing ever arrived."""
    params = {**half_open.SCALED, "keepalives": "0"}
    with half_open.worker(standin, isle, params=params) as worker:
        assert _ok(worker)["ok"]
        _half_open_while_idle(isle, worker)
        first, then = _ok(worker), _ok(worker)
    assert not first["ok"] and "server closed the connection unexpectedly" in str(first["error"])
    assert then["ok"]  # the closed socket is seen now, and replaced


def test_a_statement_sent_into_the_silence_fails_within_tcp_user_timeout_then_recovers(
    standin: StandInState, isle: Island
) -> None:
    with half_open.worker(standin, isle) as worker:
        assert _ok(worker)["ok"]
        isle.silence()
        try:
            stuck = worker.tick(WAIT_S)
        finally:
            isle.speak()
        after = _ok(worker)
    assert stuck is not None and not stuck["ok"]
    assert "timed out" in str(stuck["error"])  # an autocommit statement is never sent again
    assert 2.5 <= float(stuck["seconds"]) < 10  # tcp_user_timeout=3000, not ~15 minutes
    assert after["ok"]


def test_control_by_hand_a_statement_sent_into_the_silence_still_waits(
    standin: StandInState, isle: Island
) -> None:
    with half_open.worker(standin, isle, by_hand=True) as worker:
        assert _ok(worker)["ok"]
        isle.silence()
        try:
            stuck = worker.tick(10)
        finally:
            isle.speak()
        assert stuck is None  # still waiting after 10 s: the kernel retransmits for minutes
