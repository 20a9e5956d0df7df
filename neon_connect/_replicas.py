"""Read replicas: where their URLs come from, which endpoint each resolves to, how far each lags.

A Neon read replica is a read-only compute on the primary's branch with its own endpoint id,
so its own ``-pooler`` host. Its URLs come from the ``replica_urls`` argument, else from
``DATABASE_URL_REPLICA``: one URL, or several separated by commas (percent-encode a comma
inside a password as ``%2C``). Each goes through the same core as the primary
(:func:`neon_connect.resolve`: host rules, TLS and parameter checks) and resolves to its
pooled endpoint: the ``-pooler`` twin of a Neon host. A non-Neon host (PgBouncer in front of
a standby, as in the local stand-in) is pooled when the primary's app endpoint is, or when
the URL says ``pgbouncer=true``.

What "the same project" can mean from host names alone: a Neon host names its endpoint id,
region and cell, not its project. So a replica is refused when it is the primary's own
endpoint, when it is in another region, cell or Neon domain (then it cannot be the same
branch), when only one of the two is a Neon host, or when it names another database (a
replica serves the primary's databases, so reads would see other tables). A different
project in the same region passes these rules; ``neon-connect check`` then shows whether the
server is a replica at all (``pg_is_in_recovery()``) and how far it is behind the primary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ._endpoints import Endpoint, Endpoints
from ._resolve import resolve
from ._secret import Secret, SecretParams, scrubbed
from .errors import ConfigurationError

REPLICA_VAR = "DATABASE_URL_REPLICA"
"""Read replicas' URLs, comma-separated."""

_TRUE = {"true", "1", "yes", "on"}


def replica_sources(
    replica_urls: str | Secret | Sequence[str | Secret] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    var: str = REPLICA_VAR,
) -> list[tuple[str, Secret]]:
    """``(origin, url)`` for each replica URL given, else each one in ``var``; may be empty."""
    if replica_urls is not None:
        items = [replica_urls] if isinstance(replica_urls, (str, Secret)) else list(replica_urls)
        found: list[tuple[str, Secret]] = []
        for n, item in enumerate(items):
            if not isinstance(item, (str, Secret)):
                raise ConfigurationError(
                    f"replica_urls[{n}] must be a string, not {type(item).__name__}."
                )
            found.append((f"replica_urls[{n}]", item if isinstance(item, Secret) else Secret(item)))
        return found
    text = (os.environ if env is None else env).get(var, "")
    parts = [p.strip() for p in text.split(",")]
    if text.strip() and not all(parts):
        raise ConfigurationError(
            f"{var} has an empty entry: list the replica URLs separated by single commas."
        )
    del text  # error pages print locals
    if len(parts) == 1:
        return [(var, Secret(parts[0]))] if parts[0] else []
    return [(f"{var} (entry {n})", Secret(p)) for n, p in enumerate(parts, start=1)]


@scrubbed(ConfigurationError)
def resolve_replicas(
    replica_urls: str | Secret | Sequence[str | Secret] | None = None,
    *,
    primary: Endpoints,
    env: Mapping[str, str] | None = None,
    var: str = REPLICA_VAR,
) -> tuple[Endpoint, ...]:
    """The pooled endpoint of each read replica of ``primary``; empty when none is configured.

    Raises :class:`~neon_connect.ConfigurationError` naming the variable (or argument) for a
    malformed URL, the primary's own endpoint, another region, database or kind of server.
    """
    pairs = resolve_replica_pairs(replica_urls, primary=primary, env=env, var=var)
    return tuple(pair.app for pair in pairs)


@scrubbed(ConfigurationError)
def resolve_replica_pairs(
    replica_urls: str | Secret | Sequence[str | Secret] | None = None,
    *,
    primary: Endpoints,
    env: Mapping[str, str] | None = None,
    var: str = REPLICA_VAR,
) -> tuple[Endpoints, ...]:
    """Each replica resolved once, as a pair (its pooled endpoint, and the direct one where
    known), for adapters that route session work too (Django's ``direct()`` on a replica
    alias): carried to the driver as objects, never rebuilt from a URL."""
    sources = replica_sources(replica_urls, env=env, var=var)
    del replica_urls, env
    pairs: list[Endpoints] = []
    for origin, url in sources:
        pair = _resolve_one(origin, url, primary)
        endpoint = pair.app
        for other in (p.app for p in pairs):
            if (other.host, other.port, other.database) == (
                endpoint.host,
                endpoint.port,
                endpoint.database,
            ):
                raise ConfigurationError(
                    f"{origin} repeats {other.source} ({endpoint.display_host}): list each replica once."
                )
        pairs.append(pair)
    return tuple(pairs)


def _resolve_one(origin: str, url: Secret, primary: Endpoints) -> Endpoints:
    # The core's own path, reading only this URL under its own name (errors name it).
    endpoints = resolve(
        env={origin: url.reveal()},
        app_vars=(origin,),
        direct_vars=(),
        pooled_vars=(),
        libpq_vars=False,
    )
    endpoint = endpoints.app
    marked = url.reveal().lower().replace(" ", "")
    del url
    pri = primary.app
    rep_neon, pri_neon = endpoint.neon, pri.neon
    fix = f"Set {origin.split(' (')[0]} to the connection string of a read replica of this branch"
    if (rep_neon is None) != (pri_neon is None):
        which = "the replica" if rep_neon else "the primary"
        raise ConfigurationError(
            f"{origin} and {pri.source} point at different servers: only {which} is a Neon "
            f"host, so the replica cannot belong to the primary's project. {fix}."
        )
    if rep_neon is not None and pri_neon is not None:
        if rep_neon.endpoint_id == pri_neon.endpoint_id:
            raise ConfigurationError(
                f"{origin} names the primary's own endpoint {pri_neon.endpoint_id}: reads would "
                f"not leave the primary. {fix} (Neon Console > Connect > the replica's compute)."
            )
        if rep_neon.rest != pri_neon.rest:
            raise ConfigurationError(
                f"{origin} is in {rep_neon.rest.lstrip('.')} but the primary is in "
                f"{pri_neon.rest.lstrip('.')}: a replica runs beside its primary, so this one "
                f"belongs to another project. {fix}."
            )
    elif (endpoint.host, endpoint.port) in {(e.host, e.port) for e in (pri, primary.direct) if e}:
        raise ConfigurationError(
            f"{origin} names the primary's own server {endpoint.display_host}: reads would not "
            f"leave the primary. {fix}."
        )
    if endpoint.database != pri.database:
        raise ConfigurationError(
            f"{origin} names the database {endpoint.database!r} but the primary reads "
            f"{pri.database!r}: a replica serves the primary's databases. {fix}."
        )
    direct = endpoints.direct
    if rep_neon is None and not endpoint.transaction_pooler:
        pooled = pri.transaction_pooler or any(f"pgbouncer={t}" in marked for t in _TRUE)
        if pooled:  # same kind of server as the primary's app endpoint
            endpoint = replace(endpoint, kind="pooled", transaction_pooler=True)
            direct = None  # a lone pooler URL: the server behind it is not known
    app = replace(endpoint, source=origin)
    return Endpoints(
        app=app,
        direct=app if direct is endpoints.app else direct,  # a lone server is both
        direct_hint=f"no direct endpoint is known for the replica in {origin}",
    )


@dataclass(frozen=True)
class ReplicaStatus:
    """What a replica's server says about itself."""

    endpoint: Endpoint
    read_only: bool | None = None
    """``pg_is_in_recovery()``: True on a replica (a hot standby)."""
    lag_bytes: int | None = None
    """WAL the replica has not replayed yet, measured against the primary's current position."""
    replay_age: float | None = None
    """Seconds since the last transaction it replayed was committed (grows while idle)."""
    error: str | None = None

    def describe(self) -> str:
        where = f"{self.endpoint.source}: {self.endpoint.display_host}"
        if self.error:
            return f"{where} unreachable ({self.error})"
        role = "read-only (in recovery)" if self.read_only else "NOT read-only (a primary?)"
        lag = "unknown lag" if self.lag_bytes is None else f"{self.lag_bytes} bytes behind"
        age = (
            "" if self.replay_age is None else f", last replayed commit {self.replay_age:.1f} s ago"
        )
        return f"{where} {role}, {lag}{age}"


def measure_replica(
    endpoint: Endpoint, *, primary: Endpoint | None = None, timeout: int = 10
) -> ReplicaStatus:
    """Ask the replica (through ``endpoint``) whether it is read-only and how far it lags.

    The lag is measured on the servers: the primary's ``pg_current_wal_lsn()`` against the
    replica's ``pg_last_wal_replay_lsn()``; without ``primary`` only the replay age is known.
    Never raises for an unreachable server: the status carries the error's first line.
    """
    import psycopg

    from ._params import psycopg_params

    def params(ep: Endpoint) -> dict[str, Any]:
        return SecretParams({**psycopg_params(ep), "connect_timeout": timeout, "autocommit": True})

    try:
        target = None
        if primary is not None:
            with psycopg.connect(**params(primary)) as pri:
                row = pri.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                target = row[0] if row else None
        with psycopg.connect(**params(endpoint)) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), "
                "pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint, "
                "EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8",
                (target,),
            ).fetchone()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return ReplicaStatus(endpoint, error=endpoint.mask_secret(first))
    assert row is not None
    in_recovery, lag, age = row
    return ReplicaStatus(
        endpoint,
        read_only=bool(in_recovery),
        lag_bytes=max(int(lag), 0) if lag is not None else None,
        replay_age=float(age) if age is not None else None,
    )
