"""Find the connection string(s) and work out the pooled/direct pair.

Order of the sources (the first that is set wins; empty variables count as unset):

* app URL: ``url`` argument; ``DATABASE_URL_POOLED`` (Prisma Postgres, where ``DATABASE_URL``
  is the direct one); ``DATABASE_URL``; ``POSTGRES_URL``; the libpq variables ``PGHOST``,
  ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``.
* direct URL: ``direct_url`` argument; ``DATABASE_URL_UNPOOLED``; ``POSTGRES_URL_NON_POOLING``;
  ``DIRECT_URL``; ``DATABASE_URL`` when ``DATABASE_URL_POOLED`` supplied the app URL;
  ``PGHOST_UNPOOLED`` with the other ``PG*`` values; else derived from the app URL.

When the app URL is passed as an argument, the environment is not read at all.

Neon hosts are classified by the host itself (``-pooler``), never by the variable's name.
A non-Neon host has no name to go by: two URLs mean "app = PgBouncer in transaction mode,
direct = Postgres"; a lone URL is plain Postgres for both roles unless it carries
``pgbouncer=true``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .endpoints import DEFAULT_PORT, Endpoint, EndpointKind, Endpoints
from .errors import MissingURLError
from .hosts import parse_neon_host
from .urls import ParsedURL, parse_port, parse_url

__all__ = ["APP_VARS", "DIRECT_VARS", "POOLED_VARS", "resolve"]

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
    def is_pooled_neon(self) -> bool:
        neon = parse_neon_host(self.parsed.host)
        return bool(neon and neon.pooled)


def resolve(
    url: str | None = None,
    *,
    direct_url: str | None = None,
    env: Mapping[str, str] | None = None,
    use_pooler: bool = True,
    app_vars: Sequence[str] = APP_VARS,
    direct_vars: Sequence[str] = DIRECT_VARS,
    pooled_vars: Sequence[str] = POOLED_VARS,
    libpq_vars: bool = True,
) -> Endpoints:
    """Return the pooled/direct pair for the given URL(s) or the environment.

    ``use_pooler=False`` keeps ordinary traffic on a direct Neon URL instead of sending it to
    the pooled twin. The variable lists can be replaced to read other names. Raises
    :class:`~neon_connect.MissingURLError` when nothing is set and
    :class:`~neon_connect.InvalidURLError` for a malformed string.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    app, direct = _find_sources(
        url,
        direct_url,
        environ,
        app_vars=app_vars,
        direct_vars=direct_vars,
        pooled_vars=pooled_vars,
        libpq_vars=libpq_vars,
    )
    direct_hint = (
        "pass direct_url"
        if url is not None
        else f"set {direct_vars[0] if direct_vars else 'a direct URL'}"
    )
    if app.parsed.host and (
        parse_neon_host(app.parsed.host) or (direct and parse_neon_host(direct.parsed.host))
    ):
        return _neon_pair(app, direct, use_pooler=use_pooler)
    return _plain_pair(app, direct, direct_hint=direct_hint)


def _find_sources(
    url: str | None,
    direct_url: str | None,
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
        value = environ.get(name, "")
        return _Candidate(parse_url(value, name=name), name) if value.strip() else None

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
    host = environ.get(host_var, "").strip()
    if not host:
        return None
    port = environ.get("PGPORT", "").strip()
    text_port = parse_port(port, "PGPORT") if port else None
    params = {param: environ[var] for var, param in _PG_PARAMS.items() if environ.get(var)}
    parsed = ParsedURL(
        host=host,
        port=text_port,
        user=environ.get("PGUSER") or None,
        password=environ.get("PGPASSWORD") or None,
        database=environ.get("PGDATABASE") or None,
        params=params,
    )
    return _Candidate(parsed, f"{host_var} (+ PG* variables)")


def _endpoint(
    candidate: _Candidate,
    kind: EndpointKind,
    *,
    transaction_pooler: bool,
    host: str | None = None,
    origin: str | None = None,
) -> Endpoint:
    parsed = candidate.parsed
    params = {k: v for k, v in parsed.params.items() if k.lower() != "pgbouncer"}
    return Endpoint(
        kind=kind,
        host=host or parsed.host or "",
        port=parsed.port or DEFAULT_PORT,
        user=parsed.user,
        password=parsed.password,
        database=parsed.database,
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
        pooled = _endpoint(pooled_src, "pooled", transaction_pooler=True)
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
        direct_ep = _endpoint(direct_src, "direct", transaction_pooler=False)
    else:
        neon = parse_neon_host(pooled_src.parsed.host if pooled_src else None)
        assert neon is not None and pooled_src is not None
        direct_ep = _endpoint(
            pooled_src,
            "direct",
            transaction_pooler=False,
            host=neon.direct_host,
            origin=f"derived from {pooled_src.origin}",
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
