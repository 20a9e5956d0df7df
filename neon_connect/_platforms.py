"""Where this process runs, read from the variables each platform sets, and what Neon advises
for it (neon.com/docs/guides/serverless-connection-pooling, updated 2026-09-16).

- ``function``: one request per instance, frozen or thrown away between them (AWS Lambda,
  Netlify, Azure Functions, Google Cloud Functions, Vercel Functions). Nothing kept is
  reused, so connect per invocation.
- ``elastic``: one instance serves many requests, but is frozen when idle and stopped at will
  (Cloud Run services, ECS/Fargate, Modal). Keep at most 1-2 connections to the pooler, drop
  them after 5-10 s idle, measured against the wall clock when a connection is taken (a
  frozen container's timers stop).
- ``server``: a long-running process (Fly, Render, Railway, Heroku, Kubernetes, or nothing
  detected). Keep connections below Neon's 5-minute suspend.

Vercel's Fluid compute reuses instances, but sets no variable that tells it apart from a
classic function, so ``VERCEL`` stays ``function`` (the safe choice: nothing kept).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._endpoints import Endpoint

PlatformKind = Literal["function", "elastic", "server"]

PLATFORMS: tuple[tuple[str, str, PlatformKind], ...] = (
    # functions first: Cloud Run functions also set K_SERVICE, Netlify runs on Lambda
    ("AWS_LAMBDA_FUNCTION_NAME", "AWS Lambda", "function"),
    ("NETLIFY", "Netlify", "function"),
    ("FUNCTIONS_WORKER_RUNTIME", "Azure Functions", "function"),
    ("FUNCTION_TARGET", "Google Cloud Functions / Cloud Run functions", "function"),
    ("VERCEL", "Vercel Functions", "function"),
    ("K_SERVICE", "Google Cloud Run", "elastic"),
    ("ECS_CONTAINER_METADATA_URI_V4", "AWS ECS / Fargate", "elastic"),
    ("ECS_CONTAINER_METADATA_URI", "AWS ECS / Fargate", "elastic"),
    ("MODAL_TASK_ID", "Modal", "elastic"),
    ("FLY_APP_NAME", "Fly.io", "server"),
    ("RENDER", "Render", "server"),
    ("RAILWAY_ENVIRONMENT", "Railway", "server"),
    ("DYNO", "Heroku", "server"),
    ("KUBERNETES_SERVICE_HOST", "Kubernetes", "server"),
)
"""(variable, platform, kind), in the order they are looked at: the first one set wins."""

ELASTIC_IDLE_TIMEOUT = 10.0
"""Seconds a kept connection may sit idle on an elastic platform (Neon advises 5-10 s)."""


@dataclass(frozen=True)
class Platform:
    name: str
    kind: PlatformKind
    variable: str
    """The variable that told it."""


def detect_platform(env: Mapping[str, str]) -> Platform | None:
    """The platform ``env`` says this process runs on, or None (a plain server)."""
    for variable, name, kind in PLATFORMS:
        if env.get(variable):
            return Platform(name=name, kind=kind, variable=variable)
    return None


_CHOICES: dict[PlatformKind, str] = {
    "function": "connect per invocation: Django conn_max_age 0, SQLAlchemy NullPool",
    "elastic": (
        f"keep few connections to the pooler and drop them after {ELASTIC_IDLE_TIMEOUT:.0f} s "
        "idle: Django conn_max_age 240 with that idle limit, SQLAlchemy NullPool (or "
        "allow_client_pool=True with pool_size 1-2); kept connections closed at SIGTERM"
    ),
    "server": "keep connections below Neon's suspend: Django conn_max_age 240, SQLAlchemy NullPool",
}


def describe_platform(env: Mapping[str, str]) -> str:
    """What was detected in ``env`` and what neon-connect chose for it, in one line."""
    platform = detect_platform(env)
    if platform is None:
        return f"no platform detected (a long-running server): {_CHOICES['server']}"
    return f"{platform.name} ({platform.variable}), {platform.kind}: {_CHOICES[platform.kind]}"


IdleTimeout = float | None | Literal["auto"]
"""The adapters' ``idle_timeout`` option: ``"auto"`` (the default), seconds, or None."""


def idle_timeout(
    value: IdleTimeout, *, app: Endpoint, env: Mapping[str, str], where: str
) -> float | None:
    """Resolve ``idle_timeout``: ``"auto"`` drops a kept connection to a transaction pooler
    after 10 s idle on an elastic platform (Cloud Run, ECS/Fargate, Modal), as Neon advises,
    and sets no limit elsewhere; seconds > 0 or None stand. ``where`` names the call."""
    if value == "auto":
        platform = detect_platform(env)
        if app.transaction_pooler and platform is not None and platform.kind == "elastic":
            return ELASTIC_IDLE_TIMEOUT
        return None
    given: object = value  # whatever a caller passed, typed or not
    if given is None:
        return None
    if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0:
        return float(given)
    raise ConfigurationError(
        f'{where}(idle_timeout={value!r}): use "auto" (the default), a number of seconds '
        "> 0, or None."
    )
