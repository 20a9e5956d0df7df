"""``createcachetable`` on the direct endpoint (wraps the next ``createcachetable`` in INSTALLED_APPS order)."""

from __future__ import annotations

from neon_django.routing import next_command, runs_direct

Command = runs_direct(next_command("createcachetable"))
