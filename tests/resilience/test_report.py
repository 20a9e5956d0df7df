"""The figures docs/reliability.md is written from, computed from hand-made clients: no
database, no load."""

from __future__ import annotations

from collections import Counter

import pytest

from neon_connect import Endpoint
from resilience.load import CountingRetry, HttpTarget, Load, Plan, Stored, client_context, figures
from resilience.report import COLUMNS, _cell

pytestmark = pytest.mark.pure

ENDPOINT = Endpoint(
    kind="pooled",
    host="ep-report-test-pooler.example.invalid",
    port=5432,
    user="u",
    password=None,
    database="d",
    params={},
    transaction_pooler=True,
    source="test",
)


def test_attempts_average_and_max_cover_the_same_connect_steps() -> None:
    """A reconnect inside the transaction (the library re-sending a statement the pooler
    dropped) came after the connect step: it was in the average, not in the max, so pool
    exhaustion read "1.89 / 1", an average above its maximum."""
    retry = CountingRetry()
    load = Load(HttpTarget(port=0, path="/"), "run", Plan(clients=2, max_writes=1, seconds=0))
    for client in load.clients:
        with client_context(client):
            client.connects += 1
            before = client.attempts
            retry.call(object, endpoint=ENDPOINT)  # the connect step: one attempt
            client.attempted(before)
            retry.call(object, endpoint=ENDPOINT)  # the reconnect during the write
    result = figures(load, Stored(Counter()), scenario="pool exhaustion", stack="sqlalchemy-sync")
    assert (result.attempts_per_connect, result.attempts_max) == (1.0, 1)
    assert _cell(result)[COLUMNS.index("attempts avg / max")] == "1.00 / 1"
