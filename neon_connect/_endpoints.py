"""The resolved model: which endpoint serves ordinary traffic and which serves sessions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._hosts import NeonHost, parse_neon_host
from ._secret import MASK, is_secret_key
from ._urls import build_url
from .errors import NoDirectEndpointError

EndpointKind = Literal["pooled", "direct"]
DEFAULT_PORT = 5432


@dataclass(frozen=True)
class Endpoint:
    """One way into the database. ``repr`` and ``str`` never show the password."""

    kind: EndpointKind
    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    params: Mapping[str, str]
    transaction_pooler: bool
    """True when a transaction-mode pooler (PgBouncer) sits between the client and Postgres."""
    source: str
    """Where it came from: a variable name, ``url argument``, or ``derived from <NAME>``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    __hash__ = None  # type: ignore[assignment]  # params is a mapping

    # Immutable: a copy is the same value. Django copies settings dicts that carry endpoints
    # (``DATABASES[alias]["NEON"]``), and a read-only params mapping cannot be deep-copied.
    def __copy__(self) -> Endpoint:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Endpoint:
        return self

    # Pickled with the settings that Django's parallel test runner hands to spawned workers.
    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.kind, self.host, self.port, self.user, self.password, self.database)
        return (Endpoint, (*fields, dict(self.params), self.transaction_pooler, self.source))

    def __repr__(self) -> str:
        return (
            f"Endpoint(kind={self.kind!r}, host={self.host!r}, port={self.port!r}, "
            f"user={self.user!r}, database={self.database!r}, "
            f"params={self._shown_params()!r}, transaction_pooler={self.transaction_pooler!r}, "
            f"source={self.source!r})"
        )

    def _shown_params(self) -> dict[str, str]:
        return {k: (MASK if is_secret_key(k) else v) for k, v in self.params.items()}

    def secrets(self) -> list[str]:
        """The secret values this endpoint holds (password, ``sslpassword``, ...)."""
        found = [v for k, v in self.params.items() if is_secret_key(k) and v]
        return [self.password, *found] if self.password else found

    @property
    def neon(self) -> NeonHost | None:
        return parse_neon_host(self.host)

    @property
    def is_neon(self) -> bool:
        return self.neon is not None

    @property
    def endpoint_id(self) -> str | None:
        neon = self.neon
        return neon.endpoint_id if neon else None

    @property
    def region(self) -> str | None:
        neon = self.neon
        return neon.region if neon else None

    @property
    def origin(self) -> str:
        """``from DATABASE_URL`` or ``derived from DATABASE_URL``: where it came from, for
        messages."""
        return self.source if self.source.startswith("derived from") else f"from {self.source}"

    @property
    def display_host(self) -> str:
        """``host:port``: what logs and errors show (a Unix socket has no host name)."""
        return f"{self.host or 'the local socket'}:{self.port}"

    def mask_secret(self, text: str) -> str:
        """``text`` (an error message, say) with this endpoint's secrets masked."""
        for secret in self.secrets():
            text = text.replace(secret, MASK)
        return text

    def url(
        self,
        *,
        reveal_password: bool = False,
        scheme: str = "postgresql",
        params: Mapping[str, str] | None = None,
    ) -> str:
        """This endpoint as a URL; the password is masked unless ``reveal_password``.

        ``params`` replaces the query (driver parameters built from this endpoint, say).
        """
        password = self.password if reveal_password else (MASK if self.password else None)
        query = dict(self.params if params is None else params)
        if not reveal_password:
            query = {k: (MASK if is_secret_key(k) else v) for k, v in query.items()}
        return build_url(
            host=self.host,
            port=self.port,
            user=self.user,
            password=password,
            database=self.database,
            params=query,
            scheme=scheme,
        )

    def __str__(self) -> str:
        return f"{self.kind} endpoint {self.url()}"


@dataclass(frozen=True)
class Endpoints:
    """The pair the adapters route between.

    ``app`` serves ordinary traffic (the pooled endpoint when there is one); ``direct``
    serves anything that needs a real session, and is ``None`` when no direct endpoint is
    known (a lone URL marked ``pgbouncer=true``).
    """

    app: Endpoint
    direct: Endpoint | None
    direct_hint: str = field(default="", repr=False, compare=False)
    """How to make a direct endpoint known, for the error when it is missing."""

    @property
    def is_neon(self) -> bool:
        return self.app.is_neon

    @property
    def endpoint_id(self) -> str | None:
        return self.app.endpoint_id

    @property
    def region(self) -> str | None:
        return self.app.region

    @property
    def pooled(self) -> Endpoint | None:
        """The transaction-pooled endpoint, if there is one."""
        return self.app if self.app.transaction_pooler else None

    def session(self) -> Endpoint:
        """The endpoint for session work; raises when none is known."""
        if self.direct is None:
            raise NoDirectEndpointError(
                "No direct (non-pooled) endpoint is known for the pooled endpoint "
                f"{self.app.display_host}; {self.direct_hint or 'set DATABASE_URL_UNPOOLED'}."
            )
        return self.direct

    @property
    def same(self) -> bool:
        """True when one endpoint serves both roles (plain Postgres, no pooler)."""
        return self.direct is self.app
