"""Issue 12's first finding, reproduced under load: PgBouncer killed while many clients connect.

Clients cut mid-handshake get ``SSL error: unexpected eof while reading`` (and kin). Only the
startup was sent, so the connect retry may try again; without that classification (the
control) callers see the error from the connect step itself.
"""

from __future__ import annotations

import threading
import time

import pytest

import neon_sqlalchemy
from neon_connect import retry
from resilience.load import describe

pytestmark = pytest.mark.integration

CLIENTS = 24
KILLS = 2


def _connect_storm(standin, faults) -> tuple[list[str], int]:
    """``CLIENTS`` threads connecting and closing in a loop while PgBouncer is killed and
    restarted ``KILLS`` times; returns the connect errors callers saw and the connects made."""
    engine = neon_sqlalchemy.create_engine(env=standin.env())
    stop = threading.Event()
    errors: list[str] = []
    connects = [0] * CLIENTS

    def client(n: int) -> None:
        for _ in range(10_000):  # bounded
            if stop.is_set():
                return
            try:
                engine.connect().close()
                connects[n] += 1
            except Exception as exc:
                errors.append(describe(exc))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            time.sleep(0.4)
            faults.restart_pooler(down_for=0.2)
        time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    engine.dispose()
    assert not any(t.is_alive() for t in threads)
    return errors, sum(connects)


def test_a_pooler_killed_mid_handshake_costs_callers_no_connect_error(standin, faults):
    errors, connects = _connect_storm(standin, faults)
    assert connects > CLIENTS * KILLS  # traffic flowed before, between and after the kills
    assert errors == []


def test_control_without_the_restart_classification_callers_see_connect_errors(
    standin, faults, monkeypatch
):
    restart_errors = retry._RESTART_TEXT
    monkeypatch.setattr(retry, "_RESTART_TEXT", ())  # the classification before the fix
    errors, _ = _connect_storm(standin, faults)
    assert errors, "no client was cut mid-handshake"
    # Every one of them is an error the fixed classification retries.
    assert all(any(f in error.lower() for f in restart_errors) for error in errors), errors
