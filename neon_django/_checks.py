"""System checks (``manage.py check``) for Neon connection settings.

Every id is listed in :data:`CHECK_IDS`; messages name the setting, hints give the fix. The
rules that are not Django's own (the endpoint pair, TLS, startup options) come from
:mod:`neon_connect._rules`, which configuration errors and ``neon-connect check`` render too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from neon_connect import parse_neon_host
from neon_connect._limits import SUSPEND_SECONDS
from neon_connect._params import describe_startup_options
from neon_connect._rules import RULES, Finding, endpoint_pair, startup_options, tls_mode

from ._config import ENGINE, neon_settings
from .management._overrides import DIRECT_COMMANDS, provides

CHECK_IDS: dict[str, str] = {
    "neon_django.E001": "an app listed above neon_django overrides a command it routes direct",
    "neon_django.E002": "pooled endpoint without DISABLE_SERVER_SIDE_CURSORS",
    "neon_django.E003": "pooled endpoint with psycopg prepared statements on",
    "neon_django.E004": "client-side pool (OPTIONS['pool']) on a pooled endpoint",
    "neon_django.E005": "sslmode weaker than 'require' on a Neon host",
    "neon_django.E006": "startup options or assume_role on a pooled endpoint",
    "neon_django.E007": "app and direct endpoints of one alias reach different databases",
    "neon_django.W001": "CONN_MAX_AGE of 300 s or more on Neon without CONN_HEALTH_CHECKS",
    "neon_django.W002": "no direct endpoint known for a pooled endpoint",
    "neon_django.W003": "Django's own engine on a Neon pooler: migrations would go through it",
    "neon_django.W005": "E007's split, allowed by allow_mismatched_endpoints=True",
    "neon_django.E008": "a read-replica alias that no ReplicaRouter in DATABASE_ROUTERS serves",
    "neon_django.E009": "a read-replica alias whose primary is missing or not its TEST MIRROR",
    "neon_django.W006": "ReplicaRouter without ReplicaStickinessMiddleware",
    "neon_django.E010": "neon_django's backend in DATABASES without neon_django in INSTALLED_APPS",
}


def _pooled(db: dict[str, Any]) -> bool:
    neon = neon_settings(db)
    if neon is not None:
        return neon["ENDPOINTS"].app.transaction_pooler
    host = parse_neon_host(str(db.get("HOST") or ""))
    return bool(host and host.pooled)


def _ours(db: dict[str, Any]) -> bool:
    return db.get("ENGINE") == ENGINE


def check_databases(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Check every alias in ``settings.DATABASES`` that points at Neon or at a pooler."""
    messages: list[CheckMessage] = []
    for alias, db in settings.DATABASES.items():
        messages += _check_alias(alias, db)
    from ._replica_checks import check_replicas

    return messages + check_replicas()


def _check_alias(alias: str, db: dict[str, Any]) -> list[CheckMessage]:
    name = f"DATABASES[{alias!r}]"
    options = db.get("OPTIONS") or {}
    neon_host = parse_neon_host(str(db.get("HOST") or ""))
    pooled = _pooled(db)
    neon = neon_settings(db)
    out: list[CheckMessage] = []
    if pooled:
        if not db.get("DISABLE_SERVER_SIDE_CURSORS") and not _ours(db):
            out.append(
                Error(
                    f"{name} uses a pooled endpoint with server-side cursors on.",
                    hint=f"Set {name}['DISABLE_SERVER_SIDE_CURSORS'] = True, or use neon_django.config().",
                    obj=name,
                    id="neon_django.E002",
                )
            )
        declared = neon is not None and neon["PREPARED_STATEMENTS"]
        if options.get("prepare_threshold") is not None and not declared:
            out.append(
                Error(
                    f"{name}['OPTIONS'] turns psycopg's prepares on at a pooler.",
                    hint=f"Set {name}['OPTIONS']['prepare_threshold'] = None, or declare "
                    "neon_django.config(prepared_statements=True) (PgBouncer >= 1.22).",
                    obj=name,
                    id="neon_django.E003",
                )
            )
        if options.get("pool"):
            out.append(
                Error(
                    f"{name}['OPTIONS']['pool'] pools clients on top of PgBouncer.",
                    hint=f"Remove {name}['OPTIONS']['pool']: the pooled endpoint already pools.",
                    obj=name,
                    id="neon_django.E004",
                )
            )
        described = describe_startup_options(str(options.get("options") or ""))
        if options.get("assume_role"):
            described = ", ".join(filter(None, (described, "assume_role")))
        for finding in startup_options(
            described, host=str(db.get("HOST") or ""), where=f"{name}['OPTIONS']"
        ):
            out.append(_render(finding, name, "neon_django.E006"))
        # replicas never migrate: they need no direct endpoint
        if neon is not None and neon["ENDPOINTS"].direct is None and not neon.get("REPLICA_OF"):
            out.append(
                Warning(
                    f"{name} has no direct endpoint: migrations would use the pooler.",
                    hint="Set DATABASE_URL_UNPOOLED to the PostgreSQL server behind the pooler.",
                    obj=name,
                    id="neon_django.W002",
                )
            )
        if neon_host and not _ours(db):
            out.append(
                Warning(
                    f"{name} points Django's own engine at a Neon pooler.",
                    hint=f"Use {name} = neon_django.config() so migrations run on the direct endpoint.",
                    obj=name,
                    id="neon_django.W003",
                )
            )
    out += _check_pair(name, db)
    if neon_host:
        for finding in tls_mode(
            str(options.get("sslmode") or "require"),  # unset: the backend requires it
            neon_host=str(db.get("HOST")),
            where=f"{name}['OPTIONS']['sslmode']",
        ):
            out.append(_render(finding, name, "neon_django.E005"))
        max_age = db.get("CONN_MAX_AGE", 0)
        if (max_age is None or max_age >= SUSPEND_SECONDS) and not db.get("CONN_HEALTH_CHECKS"):
            out.append(
                Warning(
                    f"{name}['CONN_MAX_AGE'] outlives Neon's 5-minute suspend.",
                    hint=f"Set {name}['CONN_HEALTH_CHECKS'] = True, or CONN_MAX_AGE below 300.",
                    obj=name,
                    id="neon_django.W001",
                )
            )
    return out


def _check_pair(name: str, db: dict[str, Any]) -> list[CheckMessage]:
    """Migrations run on NEON['DIRECT']: it must be the database the app reads."""
    neon = neon_settings(db)
    direct = neon["DIRECT"] if neon is not None else None
    if not direct:
        return []
    app_host, direct_host = (parse_neon_host(str(d.get("HOST") or "")) for d in (db, direct))
    allowed = neon is not None and bool(neon["ALLOW_MISMATCHED_ENDPOINTS"])
    return [
        _render(f, name, "neon_django.W005" if allowed else "neon_django.E007")
        for f in endpoint_pair(
            app_host,
            direct_host,
            app_database=db.get("NAME"),
            direct_database=direct.get("NAME"),
            app_name=f"{name}['HOST']",
            direct_name=f"{name}'s direct endpoint",
            allowed=allowed,
        )
    ]


def _render(finding: Finding, name: str, check_id: str) -> CheckMessage:
    """A rule's finding as a Django check message: the rule's summary after the alias (one
    short line), the finding's message and fix as the hint."""
    level = Error if finding.level == "error" else Warning
    return level(f"{name}: {RULES[finding.id]}.", hint=finding.sentence(), obj=name, id=check_id)


def check_app_order(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """Django runs the first listed app's command: ours must come before other overrides."""
    out: list[CheckMessage] = []
    for command in DIRECT_COMMANDS:
        for app_config in apps.get_app_configs():
            if app_config.name == "neon_django":
                break
            if provides(app_config.name, command):
                out.append(
                    Error(
                        f"{app_config.name!r} overrides {command!r} above 'neon_django'.",
                        hint=f"Move 'neon_django' above {app_config.name!r} in INSTALLED_APPS, so "
                        f"'{command}' runs on the direct endpoint.",
                        obj="INSTALLED_APPS",
                        id="neon_django.E001",
                    )
                )
                break
    return out


def check_app_installed(
    *,
    app_configs: Sequence[AppConfig] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[CheckMessage]:
    """The backend's own check: without the app, ``migrate`` and the other session commands
    are Django's, and run through the pooler without a word. Registered by ``config()`` (called
    in the settings) and by the backend's import (``DATABASES`` written by hand), so it runs
    when the app and its checks are not installed."""
    if apps.is_installed("neon_django"):
        return []  # the app's own checks run
    ours = [alias for alias, db in settings.DATABASES.items() if _ours(db)]
    if not ours:
        return []
    return [
        Error(
            f"DATABASES[{ours[0]!r}] uses neon_django, missing from INSTALLED_APPS.",
            hint='Add it first: INSTALLED_APPS = ["neon_django", *INSTALLED_APPS] (without it, '
            "migrate runs through the pooler).",
            obj="INSTALLED_APPS",
            id="neon_django.E010",
        )
    ]
