"""A stand-in of this folder's own: its tests kill and restart servers, so they do not share
the session's ``neon_local``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from neon_local.faults import Faults
from neon_local.standin import StandInState, running
from resilience import scenarios


@pytest.fixture(scope="package")
def standin() -> Iterator[StandInState]:
    with running(proxy=False) as state:
        scenarios.prepare(state)
        yield state


@pytest.fixture
def faults(standin: StandInState) -> Faults:
    return Faults(standin)


@pytest.fixture(autouse=True)
def _quiet_retries(caplog: pytest.LogCaptureFixture) -> None:
    """Retries are counted by the harness; hundreds of warnings would only slow the run."""
    caplog.set_level(logging.ERROR, logger="neon_connect")
