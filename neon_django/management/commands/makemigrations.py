"""``makemigrations`` on the direct endpoint (wraps the next ``makemigrations`` in INSTALLED_APPS order)."""

from __future__ import annotations

from neon_django.routing import next_command, runs_direct

Command = runs_direct(next_command("makemigrations"))
