"""Neon's documented behaviour that both adapters respect (documentation, not configuration)."""

from __future__ import annotations

SUSPEND_SECONDS = 5 * 60
"""An idle compute suspends (closing its connections) after 5 minutes by default."""

MAX_CONNECTION_AGE = 4 * 60
"""Kept connections are recycled before a suspend can kill them."""
