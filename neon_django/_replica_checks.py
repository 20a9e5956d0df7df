"""System checks for read-replica aliases (ids E008, E009, W006 in ``checks.CHECK_IDS``).

A replica alias (``NEON["REPLICA_OF"]``, set by ``neon_django.databases()``) that no router
reads from is dead weight; one whose primary is missing, or that is not a test mirror, would
break tests or reads; without the stickiness middleware a write keeps a worker on the primary.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from ._replicas import replica_of

_MIDDLEWARE = "neon_django.routers.ReplicaStickinessMiddleware"


def _router_classes() -> list[type[Any]]:
    found: list[type[Any]] = []
    for entry in settings.DATABASE_ROUTERS:
        router = import_string(entry) if isinstance(entry, str) else entry
        found.append(router if isinstance(router, type) else type(router))
    return found


def check_replicas() -> list[CheckMessage]:
    from .routers import ReplicaRouter

    replicas = {a: replica_of(db) for a, db in settings.DATABASES.items() if replica_of(db)}
    if not replicas:
        return []
    routers = [r for r in _router_classes() if issubclass(r, ReplicaRouter)]
    out: list[CheckMessage] = []
    for alias, primary in replicas.items():
        name = f"DATABASES[{alias!r}]"
        if not any(r.primary == primary for r in routers):
            out.append(
                Error(
                    f"{name} is a read replica that no router reads from.",
                    hint="Add 'neon_django.routers.ReplicaRouter' to DATABASE_ROUTERS.",
                    obj=name,
                    id="neon_django.E008",
                )
            )
        test = settings.DATABASES[alias].get("TEST") or {}
        if primary not in settings.DATABASES or test.get("MIRROR") != primary:
            out.append(
                Error(
                    f"{name} replicates {primary!r}, which is missing or not its TEST MIRROR.",
                    hint="Build DATABASES with neon_django.databases(); keep its 'default'.",
                    obj=name,
                    id="neon_django.E009",
                )
            )
    if routers and _MIDDLEWARE not in settings.MIDDLEWARE:
        out.append(
            Warning(
                "ReplicaRouter without its middleware: one write pins a worker to the primary.",
                hint=f"Add {_MIDDLEWARE!r} to MIDDLEWARE.",
                obj="MIDDLEWARE",
                id="neon_django.W006",
            )
        )
    return out
