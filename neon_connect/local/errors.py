from __future__ import annotations

from neon_connect.errors import NeonConnectError

__all__ = ["StandInError"]


class StandInError(NeonConnectError, RuntimeError):
    """The local stand-in could not start or stop; the message says why in one line."""


StandInError.__module__ = "neon_connect.local"
