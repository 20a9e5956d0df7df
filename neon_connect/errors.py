"""The exceptions neon-connect raises.

Configuration problems subclass ``ValueError`` so callers that already catch bad input keep
working. No message ever contains a password: they name the variable or argument instead.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DoublePoolingError",
    "InsecureConnectionError",
    "InvalidURLError",
    "MissingURLError",
    "NeonConnectError",
    "NoDirectEndpointError",
    "SessionStateError",
    "UnsupportedStartupParameterError",
]


class NeonConnectError(Exception):
    """Base class of every neon-connect error."""


class ConfigurationError(NeonConnectError, ValueError):
    """The configuration cannot work; the message names what to change.

    ``rule`` is the id of the rule in :mod:`neon_connect._rules` that refused it, when one did
    (``neon-connect check`` reports the finding under that id)."""

    rule: str | None = None


class MissingURLError(ConfigurationError):
    """No connection string was found in the arguments or the environment."""


class InvalidURLError(ConfigurationError):
    """A connection string could not be parsed."""


class InsecureConnectionError(ConfigurationError):
    """A TLS setting that Neon would refuse (``sslmode`` weaker than ``require``)."""


class UnsupportedStartupParameterError(ConfigurationError):
    """A startup parameter that a transaction pooler rejects or leaks between clients."""


class DoublePoolingError(ConfigurationError):
    """A client-side pool was asked for on top of a transaction pooler."""


class NoDirectEndpointError(ConfigurationError):
    """A session-level operation needs a direct endpoint and none is known."""


class SessionStateError(NeonConnectError):
    """A statement would leave session state on a transaction pooler's server connection,
    where the next client would inherit it; it was stopped before it was sent."""


for _cls in (
    NeonConnectError,
    ConfigurationError,
    MissingURLError,
    InvalidURLError,
    InsecureConnectionError,
    UnsupportedStartupParameterError,
    DoublePoolingError,
    NoDirectEndpointError,
    SessionStateError,
):
    _cls.__module__ = "neon_connect"
