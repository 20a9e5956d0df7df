"""Neon's connection rules, each written once: a function that returns findings with ids.

Three places report a broken rule: a configuration error (:func:`neon_connect.resolve`,
:func:`neon_connect.psycopg_params`), a Django system check (:mod:`neon_django._checks`) and
``neon-connect check``. Each renders the findings of the rule here, so a rule's condition,
wording and fix live in one place. Rules take plain values, never a framework's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._hosts import NeonHost
from .errors import ConfigurationError

Level = Literal["error", "warning", "info"]

RULES: dict[str, str] = {
    "pair-servers": "app and direct URLs on different servers",
    "pair-endpoints": "app and direct URLs on different Neon endpoints",
    "pair-databases": "app and direct URLs on different databases",
    "pair-allowed": "an allowed split: migrations change another database",
    "tls-weak": "sslmode weaker than require on a Neon host",
    "tls-unset": "no sslmode=require on a host that is not Neon's",
    "startup-options": "startup options that a transaction pooler rejects",
}
"""Every id a rule here can return, with a summary (under 56 characters: Django's checks
print it after the setting's name, with the finding's message and fix as the hint). ``neon-connect check`` shows these ids,
the ids of its own findings (about what it measured on connecting), and Django's check ids."""


@dataclass(frozen=True)
class Finding:
    """What a rule found: ``message`` says what is wrong, ``fix`` what to change."""

    id: str
    level: Level
    message: str
    fix: str

    def sentence(self) -> str:
        """Message and fix as one text, for an exception."""
        return f"{self.message} {self.fix}"


def refuse(findings: list[Finding], error: type[ConfigurationError] = ConfigurationError) -> None:
    """Raise the first error-level finding as ``error``, its message and fix as one text."""
    for finding in findings:
        if finding.level == "error":
            exc = error(finding.sentence())
            exc.rule = finding.id
            raise exc


_OPT_OUT = "pass allow_mismatched_endpoints=True if the split is deliberate"


def endpoint_pair(
    app: NeonHost | None,
    direct: NeonHost | None,
    *,
    app_database: str | None,
    direct_database: str | None,
    app_name: str,
    direct_name: str,
    allowed: bool = False,
) -> list[Finding]:
    """Migrations run on the direct URL: it must reach the database the app reads.

    ``app_name`` and ``direct_name`` name where each came from (``DATABASE_URL``). Two hosts
    that are not Neon's (a PgBouncer in front of a PostgreSQL) have nothing in their names
    to compare. ``allowed`` turns the error into a warning: a deliberate split.
    """
    where = f"{app_name} and {direct_name}"
    if app is None and direct is None:
        return []
    if app is None or direct is None:
        neon_one = direct_name if app is None else app_name
        found = Finding(
            "pair-servers",
            "error",
            f"{where} point at different servers: only {neon_one} is a Neon host.",
            f"Set both to the same Neon endpoint (the -pooler and the direct host), or {_OPT_OUT}.",
        )
    elif app.endpoint_id != direct.endpoint_id or app.region != direct.region:
        found = Finding(
            "pair-endpoints",
            "error",
            f"{where} name different Neon endpoints ({app.endpoint_id} and "
            f"{direct.endpoint_id}): migrations would change a database the app does not read.",
            f"Copy both from one Neon connection string, or {_OPT_OUT}.",
        )
    elif app_database != direct_database:
        found = Finding(
            "pair-databases",
            "error",
            f"{where} name different databases on the endpoint {app.endpoint_id}: migrations "
            "would change a database the app does not read.",
            f"Use one database, or {_OPT_OUT}.",
        )
    else:
        return []
    if not allowed:
        return [found]
    return [
        Finding(
            "pair-allowed",
            "warning",
            f"{where} differ ({RULES[found.id]}): migrations change a database the app may "
            "not read.",
            "Nothing to do if the split is deliberate (allow_mismatched_endpoints=True); "
            "otherwise copy both URLs from one Neon connection string.",
        )
    ]


WEAK_SSLMODES = ("disable", "allow", "prefer")
"""``sslmode`` values that let a connection fall back to plain TCP: refused for Neon."""


def tls_mode(sslmode: str | None, *, neon_host: str | None, where: str) -> list[Finding]:
    """Neon refuses plain TCP, and ``prefer`` (libpq's default) would silently allow it; a
    host that is not Neon's gets a warning without ``require``. ``neon_host`` is the Neon
    host name, or ``None`` for any other host; ``where`` names the setting."""
    mode = (sslmode or "").lower()
    if neon_host is not None:
        if mode not in WEAK_SSLMODES:
            return []
        return [
            Finding(
                "tls-weak",
                "error",
                f"sslmode={mode} is set for the Neon host {neon_host} ({where}), but Neon "
                "requires TLS.",
                "Use sslmode=require, or sslmode=verify-full with sslrootcert=system to also "
                "verify the certificate.",
            )
        ]
    if mode and mode not in WEAK_SSLMODES:
        return []
    return [
        Finding(
            "tls-unset",
            "warning",
            f"{where} does not require TLS (sslmode={mode or 'unset'}).",
            f"Add sslmode=require to {where}.",
        )
    ]


def startup_options(described: str | None, *, host: str, where: str) -> list[Finding]:
    """PgBouncer in transaction mode refuses startup parameters it does not track, or would
    leak them between clients: session settings belong on the direct endpoint. Call it for a
    transaction pooler only; ``described`` names the settings (``-c search_path``), or is
    ``None`` when there are none."""
    if not described:
        return []
    return [
        Finding(
            "startup-options",
            "error",
            f"The startup parameter 'options' ({described}) is set for the pooled endpoint "
            f"{host} ({where}). A transaction pooler rejects it ('unsupported startup "
            "parameter') or leaks it between clients.",
            "Use the direct endpoint for session settings, run SET LOCAL inside each "
            "transaction, or set it on the role: ALTER ROLE ... SET ...",
        )
    ]
