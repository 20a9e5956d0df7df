"""Pure tests of the core: no database, no subprocess. Each is marked ``pure``, so the
stand-in that the Django settings plan is not started for them: ``pytest tests/core`` runs
in seconds and starts no process. Tests that need the stand-in live in ``tests/core_live``."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/core/" in item.nodeid:
            item.add_marker(pytest.mark.pure)
