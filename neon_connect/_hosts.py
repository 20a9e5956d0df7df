"""Neon host names: ``ep-<name>-<id>[-pooler][.c-N].<region>.<cloud>.neon.tech``.

The pooled and direct endpoints of one compute differ only by ``-pooler`` at the end of the
first label, so the kind is read from the host itself and the twin derived from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_POOLER = "-pooler"
_SUFFIXES = (".neon.tech", ".neon.build", ".postgres.vercel-storage.com")
_CELL = re.compile(r"^c-\d+$")
_LABEL = re.compile(r"^ep-[a-z0-9-]+$")


@dataclass(frozen=True)
class NeonHost:
    """A parsed Neon host name."""

    endpoint_id: str
    """The compute endpoint id, never with ``-pooler`` (``ep-cool-darkness-123456``)."""
    pooled: bool
    region: str | None
    """Neon's region id, such as ``aws-us-east-2`` (``None`` when the host does not say)."""
    rest: str
    """Everything after the first label, starting with a dot."""

    @property
    def pooled_host(self) -> str:
        return f"{self.endpoint_id}{_POOLER}{self.rest}"

    @property
    def direct_host(self) -> str:
        return f"{self.endpoint_id}{self.rest}"


def parse_neon_host(host: str | None) -> NeonHost | None:
    """Return the parsed host when it is a Neon compute endpoint, else ``None``."""
    if not host:
        return None
    host = host.strip().rstrip(".").lower()
    if not host.endswith(_SUFFIXES):
        return None
    first, dot, rest = host.partition(".")
    if not dot or not _LABEL.match(first):
        return None
    pooled = first.endswith(_POOLER)
    endpoint_id = first[: -len(_POOLER)] if pooled else first
    while endpoint_id.endswith(_POOLER):  # tolerate a doubled suffix from hand-made strings
        endpoint_id = endpoint_id[: -len(_POOLER)]
    if endpoint_id in ("ep", "ep-"):
        return None
    return NeonHost(endpoint_id=endpoint_id, pooled=pooled, region=_region(rest), rest="." + rest)


def _region(rest: str) -> str | None:
    labels = [label for label in rest.split(".") if not _CELL.match(label)]
    # <region>.<cloud>.neon.tech  ->  "<cloud>-<region>" as in Neon's region ids.
    if len(labels) >= 4 and labels[-2:] == ["neon", "tech"] and labels[-3] in ("aws", "azure"):
        return f"{labels[-3]}-{labels[-4]}"
    if len(labels) >= 3 and labels[-2:] == ["neon", "tech"]:
        return labels[-3]
    if labels[-3:] == ["postgres", "vercel-storage", "com"] and len(labels) >= 4:
        return f"aws-{labels[-4]}"
    return None
