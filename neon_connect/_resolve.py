"""Find the connection string(s) and work out the pooled/direct pair.

Order of the sources (the first that is set wins; empty variables count as unset):

* app URL: ``url`` argument; ``DATABASE_URL_POOLED`` (Prisma Postgres, where ``DATABASE_URL``
  is the direct one); ``DATABASE_URL``; ``POSTGRES_URL``; the libpq variables ``PGHOST``,
  ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``.
* direct URL: ``direct_url`` argument; ``DATABASE_URL_UNPOOLED``; ``POSTGRES_URL_NON_POOLING``;
  ``DIRECT_URL``; ``DATABASE_URL`` when ``DATABASE_URL_POOLED`` supplied the app URL;
  ``PGHOST_UNPOOLED`` with the other ``PG*`` values; else derived from the app URL.

When the app URL is passed as an argument, the environment is not read at all.

Both URLs must name the same Neon endpoint and database (else ``migrate`` would change a
database the app does not read); ``allow_mismatched_endpoints=True`` permits a deliberate
split. A non-Neon app URL beside a Neon direct URL is refused the same way.

Neon hosts are classified by the host itself (``-pooler``), never by the variable's name.
A non-Neon host has no name to go by: two URLs mean "app = PgBouncer in transaction mode,
direct = Postgres"; a lone URL is plain Postgres for both roles unless it carries
``pgbouncer=true``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from ._endpoints import DEFAULT_PORT, Endpoint, EndpointKind, Endpoints
from ._hosts import NeonHost, parse_neon_host
from ._rules import endpoint_pair, refuse
from ._secret import Secret, scrubbed
from ._urls import ParsedURL, check_host, check_params, parse_port, parse_url
from .errors import ConfigurationError, InvalidURLError, MissingURLError

APP_VARS: tuple[str, ...] = ("DATABASE_URL", "POSTGRES_URL")
DIRECT_VARS: tuple[str, ...] = ("DATABASE_URL_UNPOOLED", "POSTGRES_URL_NON_POOLING", "DIRECT_URL")
POOLED_VARS: tuple[str, ...] = ("DATABASE_URL_POOLED",)

# libpq variables that fill in the PG* route, mapped to connection parameters.
_PG_PARAMS = {
    "PGSSLMODE": "sslmode",
    "PGSSLROOTCERT": "sslrootcert",
    "PGCHANNELBINDING": "channel_binding",
    "PGAPPNAME": "application_name",
    "PGOPTIONS": "options",
    "PGCONNECT_TIMEOUT": "connect_timeout",
}
_TRUE = {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class _Candidate:
    parsed: ParsedURL
    origin: str

    @property
    def neon(self) -> NeonHost | None:
        return parse_neon_host(self.parsed.host)

    @property
    def is_pooled_neon(self) -> bool:
        neon = self.neon
        return bool(neon and neon.pooled)


class _Environ(Mapping[str, str]):
    """The environment, with a ``repr`` that shows no values (error pages print locals)."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<environment with {len(self._data)} variables>"


def _secret(value: str | Secret | None, name: str) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise InvalidURLError(f"{name} must be a string, not {type(value).__name__}.")
    return Secret(value)


@scrubbed(ConfigurationError)
def resolve(
    url: str | Secret | None = None,
    *,
    direct_url: str | Secret | None = None,
    env: Mapping[str, str] | None = None,
    use_pooler: bool = True,
    allow_mismatched_endpoints: bool = False,
    app_vars: Sequence[str] = APP_VARS,
    direct_vars: Sequence[str] = DIRECT_VARS,
    pooled_vars: Sequence[str] = POOLED_VARS,
    libpq_vars: bool = True,
) -> Endpoints:
    """Return the pooled/direct pair for the given URL(s) or the environment.

    ``use_pooler=False`` keeps ordinary traffic on a direct Neon URL instead of sending it to
    the pooled twin. ``allow_mismatched_endpoints=True`` accepts app and direct URLs that
    name different endpoints or databases (a deliberate split; refused by default). The
    variable lists can be replaced to read other names. Raises
    :class:`~neon_connect.MissingURLError` when nothing is set and
    :class:`~neon_connect.ConfigurationError` (or a subclass) for anything malformed.
    """
    app_secret = _secret(url, "the url argument")
    direct_secret = _secret(direct_url, "the direct_url argument")
    environ = _Environ(os.environ if env is None else env)
    del url, direct_url, env
    app, direct = _find_sources(
        app_secret,
        direct_secret,
        environ,
        app_vars=app_vars,
        direct_vars=direct_vars,
        pooled_vars=pooled_vars,
        libpq_vars=libpq_vars,
    )
    direct_hint = (
        "pass direct_url"
        if app_secret is not None
        else f"set {direct_vars[0] if direct_vars else 'a direct URL'}"
    )
    for candidate in (app, direct):
        if candidate is not None:
            _check_endpoint_option(candidate)
    if direct is not None and not allow_mismatched_endpoints:
        _refuse_mismatch(app, direct)
    if app.neon:
        return _neon_pair(app, direct, use_pooler=use_pooler)
    return _plain_pair(app, direct, direct_hint=direct_hint)


def _refuse_mismatch(app: _Candidate, direct: _Candidate) -> None:
    """Both URLs must reach one database, or migrations change a database the app never reads."""
    refuse(
        endpoint_pair(
            app.neon,
            direct.neon,
            app_database=_database(app.parsed),
            direct_database=_database(direct.parsed),
            app_name=app.origin,
            direct_name=direct.origin,
        )
    )


def _check_endpoint_option(candidate: _Candidate) -> None:
    """``options=endpoint=<id>`` (for libpq without SNI) must name the host's own endpoint."""
    options = candidate.parsed.params.get("options", "")
    neon = candidate.neon
    if "endpoint" not in options or neon is None:
        return
    try:
        tokens = shlex.split(options)
    except ValueError:
        tokens = options.split()
    for token in tokens:
        key, _, value = token.partition("=")
        if key == "endpoint" and value.lower().removesuffix("-pooler") != neon.endpoint_id:
            raise ConfigurationError(
                f"{candidate.origin} sets options=endpoint={value} but its host is the endpoint "
                f"{neon.endpoint_id}; Neon would route by the option. Remove the option (libpq "
                "14+ sends the host name) or make it match the host."
            )


def _database(parsed: ParsedURL) -> str | None:
    """The database libpq connects to: the URL's, else one named like the user."""
    return parsed.database or parsed.user


def _find_sources(
    url: Secret | None,
    direct_url: Secret | None,
    environ: Mapping[str, str],
    *,
    app_vars: Sequence[str],
    direct_vars: Sequence[str],
    pooled_vars: Sequence[str],
    libpq_vars: bool,
) -> tuple[_Candidate, _Candidate | None]:
    looked: list[str] = []
    app: _Candidate | None = None
    direct: _Candidate | None = None
    if url is not None:
        app = _Candidate(parse_url(url, name="the url argument"), "url argument")
        if direct_url is not None:
            direct = _Candidate(
                parse_url(direct_url, name="the direct_url argument"), "direct_url argument"
            )
        return app, direct

    def from_var(name: str) -> _Candidate | None:
        looked.append(name)
        value = Secret(environ.get(name, ""))
        return _Candidate(parse_url(value, name=name), name) if value.reveal().strip() else None

    pooled_first = next((c for c in map(from_var, pooled_vars) if c), None)
    app = pooled_first or next((c for c in map(from_var, app_vars) if c), None)
    if app is None and libpq_vars:
        looked.append("PGHOST")
        app = _from_libpq_vars(environ, "PGHOST")

    if direct_url is not None:
        direct = _Candidate(
            parse_url(direct_url, name="the direct_url argument"), "direct_url argument"
        )
    else:
        names = list(direct_vars)
        if pooled_first is not None:
            names += [n for n in app_vars if n not in names]
        direct = next((c for c in map(from_var, names) if c), None)
        if direct is None and libpq_vars:
            direct = _from_libpq_vars(environ, "PGHOST_UNPOOLED")

    if app is None:
        if direct is None:
            seen = ", ".join(dict.fromkeys(looked + [*direct_vars, "PGHOST_UNPOOLED"]))
            raise MissingURLError(
                f"No database connection string found. Looked at: {seen}. Set DATABASE_URL to "
                "your Neon connection string (Neon Console > Connect), or pass url=..."
            )
        app, direct = direct, None  # a lone direct URL serves both roles
    return app, direct


def _from_libpq_vars(environ: Mapping[str, str], host_var: str) -> _Candidate | None:
    host = _pg_var(environ, host_var).strip()
    if not host:
        return None
    if "," in host:
        raise InvalidURLError(
            f"{host_var} lists several hosts; neon-connect needs one host (Neon serves each "
            "endpoint from one host name)."
        )
    if "://" in host or "@" in host:
        raise InvalidURLError(
            f"{host_var} holds a connection string, not a host name: put the URL in "
            "DATABASE_URL, or set only the host name here."
        )
    if not host.startswith("/") and (":" in host) and not _is_ipv6(host):
        raise InvalidURLError(
            f"{host_var} carries a port (host:port); libpq reads only the host name from it: "
            "set the port in PGPORT."
        )
    check_host(host, host_var)
    port = _pg_var(environ, "PGPORT").strip()
    text_port = parse_port(port, "PGPORT") if port else None
    params = {param: _pg_var(environ, var) for var, param in _PG_PARAMS.items() if environ.get(var)}
    for var, param in _PG_PARAMS.items():
        if param in params:
            check_params({param: params[param]}, var)
    parsed = ParsedURL(
        host=host,
        port=text_port,
        user=_pg_var(environ, "PGUSER") or None,
        password=_pg_var(environ, "PGPASSWORD") or None,
        database=_pg_var(environ, "PGDATABASE") or None,
        params=params,
    )
    return _Candidate(parsed, f"{host_var} (+ PG* variables)")


def _is_ipv6(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).version == 6
    except ValueError:
        return False


def _pg_var(environ: Mapping[str, str], name: str) -> str:
    """One PG* variable, refused by name when it holds bytes that are not UTF-8."""
    value = environ.get(name, "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidURLError(
            f"{name} contains bytes that are not valid UTF-8: set it again as UTF-8 text."
        ) from None
    return value


def _endpoint(
    candidate: _Candidate,
    kind: EndpointKind,
    *,
    transaction_pooler: bool,
    host: str | None = None,
    origin: str | None = None,
) -> Endpoint:
    parsed = candidate.parsed
    params = {k: v for k, v in parsed.params.items() if k != "pgbouncer"}
    return Endpoint(
        kind=kind,
        host=host or parsed.host or "",
        port=parsed.port or DEFAULT_PORT,
        user=parsed.user,
        password=parsed.password,
        database=_database(parsed),
        params=params,
        transaction_pooler=transaction_pooler,
        source=origin or candidate.origin,
    )


def _neon_pair(app: _Candidate, direct: _Candidate | None, *, use_pooler: bool) -> Endpoints:
    given = [c for c in (app, direct) if c is not None]
    pooled_src = next((c for c in given if c.is_pooled_neon), None)
    # The direct role prefers the direct source; a non-Neon direct URL is trusted as given.
    direct_src = next(
        (c for c in (direct, app) if c is not None and not c.is_pooled_neon and c.parsed.host),
        None,
    )
    if pooled_src is not None:
        neon = pooled_src.neon
        assert neon is not None
        # the host as Neon spells it: one -pooler, lower case
        pooled = _endpoint(pooled_src, "pooled", transaction_pooler=True, host=neon.pooled_host)
    else:
        assert direct_src is not None
        neon = parse_neon_host(direct_src.parsed.host)
        assert neon is not None
        pooled = _endpoint(
            direct_src,
            "pooled",
            transaction_pooler=True,
            host=neon.pooled_host,
            origin=f"derived from {direct_src.origin}",
        )
    if direct_src is not None:
        twin = direct_src.neon
        direct_ep = _endpoint(
            direct_src, "direct", transaction_pooler=False, host=twin.direct_host if twin else None
        )
    else:
        # the direct URL's own endpoint when it names one (a split allowed by the caller)
        twin_src = direct if direct is not None and direct.neon else pooled_src
        assert twin_src is not None
        neon = twin_src.neon
        assert neon is not None
        direct_ep = _endpoint(
            twin_src,
            "direct",
            transaction_pooler=False,
            host=neon.direct_host,
            origin=f"derived from {twin_src.origin}",
        )
    app_ep = pooled if (use_pooler or app.is_pooled_neon) else direct_ep
    return Endpoints(app=app_ep, direct=direct_ep)


def _plain_pair(app: _Candidate, direct: _Candidate | None, *, direct_hint: str) -> Endpoints:
    if direct is not None and direct.parsed == app.parsed:
        direct = None
    marked = app.parsed.params.get("pgbouncer", "").lower() in _TRUE
    if direct is not None:
        return Endpoints(
            app=_endpoint(app, "pooled", transaction_pooler=True),
            direct=_endpoint(direct, "direct", transaction_pooler=False),
        )
    if marked:
        return Endpoints(
            app=_endpoint(app, "pooled", transaction_pooler=True),
            direct=None,
            direct_hint=f"{direct_hint} to the PostgreSQL server behind the pooler",
        )
    lone = _endpoint(app, "direct", transaction_pooler=False)
    return Endpoints(app=lone, direct=lone)
