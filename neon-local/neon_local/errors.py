from __future__ import annotations

from neon_connect.errors import NeonConnectError

__all__ = ["PgBouncerTooOld", "StandInError"]


class StandInError(NeonConnectError, RuntimeError):
    """The local stand-in could not start or stop; the message says why in one line."""


class PgBouncerTooOld(StandInError):
    """No PgBouncer >= 1.22 was found (none, or only an older one such as Debian 12's 1.18).

    ``neon-local up`` builds one when it sees this; the message names how to do that.
    """


StandInError.__module__ = "neon_local"
PgBouncerTooOld.__module__ = "neon_local"
