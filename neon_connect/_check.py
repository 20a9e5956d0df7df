"""``neon-connect check``: resolve the environment as the adapters would, connect, and flag pitfalls.

Every finding carries the exact fix. Nothing printed ever contains a password.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._endpoints import Endpoint, Endpoints
from ._params import libpq_version, psycopg_params
from ._platforms import describe_platform
from ._probes import answers_like_transaction_pooler, pooler_probe_wanted
from ._resolve import resolve
from ._rules import RULES, Finding, endpoint_pair, tls_mode
from ._secret import Secret
from .errors import ConfigurationError, MissingURLError

FINDING_IDS: dict[str, str] = {
    **RULES,  # the rule book's, rendered here as by configuration errors and Django's checks
    "no-url": "nothing configured",
    "configuration": "the configuration does not resolve (the error names the variable)",
    "no-direct": "a transaction pooler without a direct endpoint",
    "app-on-direct": "ordinary traffic on the direct Neon endpoint",
    "no-sni": "libpq without SNI",
    "short-connect-timeout": "connect_timeout shorter than a cold start",
    "connect": "an endpoint could not be reached",
    "no-tls": "connected to Neon without TLS",
    "lone-pooler": "a URL taken for PostgreSQL where PgBouncer answers",
    "not-a-pooler": "a pooled URL that keeps one backend",
    "replica-configuration": "DATABASE_URL_REPLICA does not resolve",
    "replica-unreachable": "a read replica that does not answer",
    "replica-writable": "a read replica that is writable",
}
"""Every id ``neon-connect check`` can report; ``manage.py neon_check`` adds Django's."""


@dataclass
class EndpointReport:
    role: str
    kind: str
    url: str
    source: str
    transaction_pooler: bool
    host: str = ""
    """``host:port``, the URL's parts on lines of their own in the text report."""
    database: str = ""
    user: str = ""
    options: str = ""
    connected: bool = False
    error: str | None = None
    tls: str | None = None
    server_version: str | None = None
    connect_ms: float | None = None
    round_trip_ms: float | None = None
    max_connections: int | None = None
    behaves_as_transaction_pooler: bool | None = None
    tracks_prepared_statements: bool | None = None
    """Measured by a real probe (:mod:`neon_connect._probes`), on pooled endpoints only."""


@dataclass
class Report:
    configured: bool
    is_neon: bool = False
    endpoint_id: str | None = None
    region: str | None = None
    libpq_version: int = 0
    endpoints: list[EndpointReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    """Why the configuration could not be resolved (``None`` when it was)."""
    replicas: list[dict[str, Any]] = field(default_factory=list)
    """Read replicas (``DATABASE_URL_REPLICA``): see :mod:`neon_connect._replica_check`."""
    platform: str | None = None
    """The platform detected from the environment and what was chosen for it."""

    @property
    def ok(self) -> bool:
        return self.configured and not any(f.level == "error" for f in self.findings)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "ok": self.ok}, indent=2)

    def to_text(self) -> str:
        if not self.configured or self.error:
            return "\n".join(
                [
                    f"libpq {_libpq_text(self.libpq_version)}",
                    *(_finding_text(f) for f in self.findings),
                ]
            )
        lines = []
        if self.is_neon:
            lines.append(
                f"Neon endpoint {self.endpoint_id} in {self.region or 'an unknown region'}"
            )
        lines.append(
            f"libpq {_libpq_text(self.libpq_version)} (SNI {'yes' if self.libpq_version >= 140000 else 'no'})"
        )
        if self.platform:
            lines.append(f"platform {self.platform}")
        # one block per endpoint, not side by side: lines stay under ~100 columns. An
        # error is printed once, with its fix, among the findings below.
        for entry in self.endpoints:
            origin = entry.source if entry.source.startswith("derived") else f"from {entry.source}"
            lines.append(f"{entry.role} endpoint: {entry.kind}, {origin}")  # as Endpoint.origin
            for label, value in (
                ("host", entry.host),
                ("database", entry.database or None),
                ("user", entry.user or None),
                ("options", entry.options or None),
                (
                    "connected",
                    None if entry.error is None and not entry.connected else entry.connected,
                ),
                ("TLS", entry.tls),
                ("server", entry.server_version),
                ("connect ms", entry.connect_ms),
                ("round trip ms", entry.round_trip_ms),
                ("max_connections", entry.max_connections),
                ("transaction pooler", entry.behaves_as_transaction_pooler),
                ("tracks prepares", entry.tracks_prepared_statements),
            ):
                if value is not None:
                    lines.append(f"  {label:<19}{_fmt(value)}")
        lines += [
            f"replica {r.get('summary') or r['source'] + ': ' + r['url']}" for r in self.replicas
        ]
        lines += [_finding_text(finding) for finding in self.findings]
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def _finding_text(finding: Finding) -> str:
    return f"{finding.level.upper()} [{finding.id}]: {finding.message}\n  fix: {finding.fix}"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _libpq_text(version: int) -> str:
    return f"{version // 10000}.{version % 10000}" if version else "unknown"


def run_check(
    url: str | None = None,
    *,
    direct_url: str | None = None,
    env: Mapping[str, str] | None = None,
    connect: bool = True,
    timeout: int = 10,
    allow_mismatched_endpoints: bool = False,
) -> Report:
    """Resolve, connect to each endpoint and collect findings."""
    version = libpq_version()
    app_secret = None if url is None else Secret(url)
    direct_secret = None if direct_url is None else Secret(direct_url)
    del url, direct_url  # error pages print locals: keep only masked values
    failure: Report | None = None
    try:
        endpoints = resolve(
            app_secret,
            direct_url=direct_secret,
            env=env,
            allow_mismatched_endpoints=allow_mismatched_endpoints,
        )
    except MissingURLError as exc:
        message = str(exc).split(". Set ")[0] + "."
        failure = Report(
            configured=False,
            libpq_version=version,
            error=message,
            findings=[
                Finding(
                    "no-url",
                    "error",
                    message,
                    "export DATABASE_URL='<your Neon connection string>'",
                )
            ],
        )
    except ConfigurationError as exc:
        failure = Report(
            configured=True,
            libpq_version=version,
            error=str(exc),
            findings=[
                Finding(
                    exc.rule or "configuration",
                    "error",
                    str(exc),
                    "correct the variable named above",
                )
            ],
        )
    if failure is not None:
        return failure
    report = check_endpoints(endpoints, connect=connect, timeout=timeout)
    from ._replica_check import check_replicas  # read replicas come from the environment

    report.replicas, replica_findings = check_replicas(
        endpoints, env=env, connect=connect, timeout=timeout
    )
    report.findings += replica_findings
    report.platform = describe_platform(os.environ if env is None else env)
    return report


def check_endpoints(endpoints: Endpoints, *, connect: bool = True, timeout: int = 10) -> Report:
    """Connect to each endpoint of an already resolved pair and collect findings."""
    version = libpq_version()
    report = Report(
        configured=True,
        is_neon=endpoints.is_neon,
        endpoint_id=endpoints.endpoint_id,
        region=endpoints.region,
        libpq_version=version,
    )
    roles: list[tuple[str, Endpoint]] = [("app", endpoints.app)]
    if endpoints.direct is not None and endpoints.direct is not endpoints.app:
        roles.append(("direct", endpoints.direct))
    for role, endpoint in roles:
        entry = EndpointReport(
            role=role,
            kind=endpoint.kind,
            url=endpoint.url(),
            source=endpoint.source,
            transaction_pooler=endpoint.transaction_pooler,
            host=endpoint.display_host,
            database=endpoint.database or "",
            user=endpoint.user or "",
            options=" ".join(f"{k}={v}" for k, v in endpoint._shown_params().items()),
        )
        report.endpoints.append(entry)
        try:
            params = psycopg_params(endpoint, connect_timeout=timeout)
        except ConfigurationError as exc:
            entry.error = str(exc)
            continue
        if connect:
            _probe(entry, endpoint, params)
    report.findings = _findings(endpoints, report, version)
    return report


def _probe(entry: EndpointReport, endpoint: Endpoint, params: dict[str, Any]) -> None:
    import psycopg

    timeout = int(params.get("connect_timeout") or 10)
    started = time.perf_counter()
    try:
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as exc:
        entry.error = _first_line(exc, endpoint)
        return
    with conn:
        entry.connect_ms = (time.perf_counter() - started) * 1000
        entry.connected = True
        entry.tls = _tls_version(endpoint, timeout) if conn.pgconn.ssl_in_use else "none"
        entry.server_version = conn.execute("SHOW server_version").fetchone()[0].split()[0]  # type: ignore[index]
        trips = []
        for _ in range(5):
            t0 = time.perf_counter()
            conn.execute("SELECT 1")
            trips.append((time.perf_counter() - t0) * 1000)
        entry.round_trip_ms = statistics.median(trips)
        entry.max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        if endpoint.transaction_pooler:
            entry.behaves_as_transaction_pooler = _moves_between_backends(conn, params)
        elif pooler_probe_wanted(endpoint):  # taken for a server: is it one?
            entry.behaves_as_transaction_pooler = answers_like_transaction_pooler(
                endpoint, conn, lambda: psycopg.connect(**params)
            )
    if endpoint.transaction_pooler:
        from ._probes import pooler_tracks_prepared_statements

        with contextlib.suppress(psycopg.Error):
            entry.tracks_prepared_statements = pooler_tracks_prepared_statements(**params)


def _tls_version(endpoint: Endpoint, timeout: int) -> str | None:
    """The TLS version the endpoint itself negotiates (PgBouncer's, not the hop behind it).

    A PostgreSQL SSLRequest, then a handshake: only the version is read; nothing is sent.
    """
    import socket
    import ssl
    import struct

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            raw.sendall(struct.pack("!ii", 8, 80877103))
            if raw.recv(1) != b"S":
                return "none"
            with context.wrap_socket(raw, server_hostname=endpoint.host) as tls:
                return tls.version()
    except (OSError, ssl.SSLError):
        return None


def _moves_between_backends(conn: Any, params: dict[str, Any]) -> bool:
    """A transaction pooler hands our next statement to another backend while one is held."""
    import psycopg

    first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    with psycopg.connect(**params) as holder:
        holder.execute("SELECT pg_backend_pid()")  # opens a transaction: holds a backend
        result: list[int] = []
        worker = threading.Thread(
            target=lambda: result.append(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        )
        worker.start()
        worker.join(3)  # with a pool of one, our query waits for the holder
        holder.rollback()
    worker.join(10)
    if not result:  # it had to wait for the holder: a transaction pool of one
        return True
    return bool(result[0] != first)


def _first_line(exc: BaseException, endpoint: Endpoint) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return endpoint.mask_secret(text)


def _findings(endpoints: Endpoints, report: Report, version: int) -> list[Finding]:
    out: list[Finding] = []
    app, direct = endpoints.app, endpoints.direct
    if direct is not None and direct is not app:
        # resolve() refused a split unless it was allowed: what is left is a warning
        out += endpoint_pair(
            app.neon,
            direct.neon,
            app_database=app.database,
            direct_database=direct.database,
            app_name=app.source,
            direct_name=direct.source,
            allowed=True,
        )
    if app.transaction_pooler and direct is None:
        out.append(
            Finding(
                "no-direct",
                "error",
                "Migrations would run through the pooler: no direct endpoint is known.",
                "export DATABASE_URL_UNPOOLED='<the PostgreSQL server behind the pooler>'",
            )
        )
    if endpoints.is_neon and not app.transaction_pooler:
        out.append(
            Finding(
                "app-on-direct",
                "warning",
                "Ordinary traffic uses the direct Neon endpoint (limited by max_connections).",
                "use the -pooler connection string, or drop use_pooler=False",
            )
        )
    if endpoints.is_neon and version and version < 140000:
        out.append(
            Finding(
                "no-sni",
                "warning",
                f"libpq {_libpq_text(version)} has no SNI; neon-connect adds options=endpoint=<id> for you.",
                "pip install 'psycopg[binary]' to get a bundled modern libpq",
            )
        )
    for endpoint in (app, direct):
        if endpoint is None:
            continue
        if not endpoints.is_neon:  # a Neon endpoint with weak TLS does not resolve
            out += tls_mode(endpoint.params.get("sslmode"), neon_host=None, where=endpoint.source)
        if (
            "connect_timeout" in endpoint.params
            and int(endpoint.params["connect_timeout"] or 0) < 5
        ):
            out.append(
                Finding(
                    "short-connect-timeout",
                    "warning",
                    f"connect_timeout={endpoint.params['connect_timeout']} is shorter than a Neon cold start.",
                    f"raise connect_timeout in {endpoint.source} to 10 or more",
                )
            )
    for entry in report.endpoints:
        if entry.error:
            out.append(
                Finding(
                    "connect",
                    "error",
                    f"The {entry.role} endpoint: {entry.error}",
                    _fix_for(entry.error),
                )
            )
        elif entry.connected and entry.tls == "none" and endpoints.is_neon:
            out.append(
                Finding(
                    "no-tls",
                    "error",
                    f"The {entry.role} endpoint is connected without TLS.",
                    "set sslmode=require",
                )
            )
        if entry.behaves_as_transaction_pooler and not entry.transaction_pooler:
            out.append(
                Finding(
                    "lone-pooler",
                    "error",
                    f"The {entry.role} endpoint ({entry.source}) is taken for a PostgreSQL "
                    "server, but a transaction pooler (PgBouncer) answers there.",
                    f"add ?pgbouncer=true to {entry.source} and export DATABASE_URL_UNPOOLED="
                    "'<the PostgreSQL server behind the pooler>'",
                )
            )
        if entry.behaves_as_transaction_pooler is False and entry.transaction_pooler:
            out.append(
                Finding(
                    "not-a-pooler",
                    "warning",
                    f"The {entry.role} endpoint kept us on one backend: it may not be a transaction pooler.",
                    "if it is plain Postgres, set only DATABASE_URL (one URL means no pooler)",
                )
            )
    return out


_FIXES = (
    (
        "unsupported startup parameter",
        "remove options=-c ... from the pooled URL; use SET LOCAL or the direct URL",
    ),
    ("'options'", "remove options=-c ... from the pooled URL; use SET LOCAL or the direct URL"),
    ("sslmode=", "use sslmode=require (or verify-full with sslrootcert=system)"),
    (
        "endpoint id is not specified",
        "upgrade libpq (pip install 'psycopg[binary]') or add options=endpoint%3D<id>",
    ),
    ("authentication failed", "copy user, password and host from one Neon connection string"),
    ("does not exist", "check the database and role names in the connection string"),
    (
        "channel binding",
        "drop channel_binding=require for poolers that do not offer SCRAM-SHA-256-PLUS",
    ),
    (
        "query_wait_timeout",
        "every server connection of the pool stayed busy for query_wait_timeout: look for long "
        "or idle-in-transaction sessions, or a pool too small for the load",
    ),
    (
        "read-only transaction",
        "on the pooled endpoint a client left default_transaction_read_only on a server "
        "connection; neon-connect's session guard stops the SET that leaks it",
    ),
    ("timeout", "raise connect_timeout (a suspended compute takes a moment to wake)"),
    ("connection refused", "check host and port; is the server running?"),
)


def _fix_for(error: str) -> str:
    lowered = error.lower()
    return next((fix for needle, fix in _FIXES if needle in lowered), "see the error above")
