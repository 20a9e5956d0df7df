"""The tick loop as a ``DirectCommand``: one ``direct()`` session for the whole run, as a
LISTEN worker or a job holding an advisory lock has."""

from __future__ import annotations

from neon_django import DirectCommand

from .tick_loop import Command as TickLoop


class Command(DirectCommand, TickLoop):
    help = "Query once per tick on the direct endpoint until stdin closes."
