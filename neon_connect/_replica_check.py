"""The read-replica part of ``neon-connect check``: each replica, whether it is read-only and
how far it lags, measured on the servers (:func:`neon_connect._replicas.measure_replica`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._endpoints import Endpoints
from ._replicas import REPLICA_VAR, measure_replica, resolve_replicas
from ._rules import Finding
from .errors import ConfigurationError


def check_replicas(
    endpoints: Endpoints, *, env: Mapping[str, str] | None, connect: bool, timeout: int
) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Rows for the report (masked URLs) and findings; both empty without replicas."""
    try:
        replicas = resolve_replicas(primary=endpoints, env=env)
    except ConfigurationError as exc:
        return [], [Finding("replica-configuration", "error", str(exc), f"correct {REPLICA_VAR}")]
    rows: list[dict[str, Any]] = []
    findings: list[Finding] = []
    for endpoint in replicas:
        row: dict[str, Any] = {"source": endpoint.source, "url": endpoint.url()}
        rows.append(row)
        if not connect:
            continue
        status = measure_replica(endpoint, primary=endpoints.app, timeout=timeout)
        row.update(
            read_only=status.read_only,
            lag_bytes=status.lag_bytes,
            replay_age_s=status.replay_age,
            error=status.error,
            summary=status.describe(),
        )
        if status.error:
            findings.append(
                Finding(
                    "replica-unreachable",
                    "warning",
                    f"read replica {endpoint.source} ({endpoint.display_host}) is unreachable",
                    "start the replica compute, or remove it from " + REPLICA_VAR,
                )
            )
        elif not status.read_only:
            findings.append(
                Finding(
                    "replica-writable",
                    "error",
                    f"{endpoint.source} ({endpoint.display_host}) is not a read replica: "
                    "pg_is_in_recovery() is false, so reads would go to a writable server",
                    f"set {REPLICA_VAR} to the replica compute's connection string",
                )
            )
    return rows, findings
