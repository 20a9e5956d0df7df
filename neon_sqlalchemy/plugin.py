"""A SQLAlchemy ``CreateEnginePlugin`` so engines built from a URL string get our behaviour.

Alembic's stock ``env.py`` builds its engine with ``engine_from_config()`` from the
``sqlalchemy.url`` option. :func:`neon_sqlalchemy.alembic.configure` sets that option to the
direct endpoint with ``?plugin=neon_connect`` (registered under the ``sqlalchemy.plugins``
entry point), and this plugin then adds cold-start retry and, with ``neon_migration_lock=1``,
the advisory lock that makes concurrent migration runs wait for each other.

``configure()`` resolved that endpoint already: it hands it over under ``neon_endpoint=``
(:func:`carry`), so the plugin neither parses the URL again nor reads its password. A URL
written by hand with ``?plugin=neon_connect`` alone is resolved here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, CreateEnginePlugin, Engine

from neon_connect import DEFAULT_RETRY, MIGRATION_LOCK_KEY, Endpoint, resolve

from ._events import (
    add_commit_outcome,
    add_migration_lock,
    add_retry,
    add_statement_listeners,
)

__all__ = ["NeonPlugin"]

_LOCK_PARAM = "neon_migration_lock"
_ENDPOINT_PARAM = "neon_endpoint"
_TRUE = ("1", "true", "yes", "on")
_CARRIED: dict[str, Endpoint] = {}


def carry(endpoint: Endpoint) -> dict[str, str]:
    """The URL parameters that hand ``endpoint``, as resolved, to the plugin in this process."""
    token = f"{id(endpoint):x}"
    _CARRIED[token] = endpoint  # kept alive, so the token is never reused for another
    return {"plugin": "neon_connect", _ENDPOINT_PARAM: token}


def endpoint_of(url: URL) -> Endpoint:
    """The endpoint ``url`` names, as it is: Alembic's URL is the direct one, never swapped
    for its pooled twin (which would mislabel retry logs and error notes)."""
    return resolve(url.render_as_string(hide_password=False), use_pooler=False).app


class NeonPlugin(CreateEnginePlugin):
    """Loaded by SQLAlchemy for URLs with ``?plugin=neon_connect``."""

    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        self.lock = str(url.query.get(_LOCK_PARAM, "")).lower() in _TRUE
        self.endpoint = _CARRIED.get(str(url.query.get(_ENDPOINT_PARAM, "")))

    def update_url(self, url: URL) -> URL:
        return url.difference_update_query([_LOCK_PARAM, _ENDPOINT_PARAM, "plugin"])

    def engine_created(self, engine: Engine) -> None:
        endpoint = self.endpoint or endpoint_of(engine.url)
        add_retry(engine, endpoint, DEFAULT_RETRY)
        add_statement_listeners(engine, endpoint, rerun=DEFAULT_RETRY, session_guard="off")
        add_commit_outcome(engine)
        if self.lock:
            add_migration_lock(engine, MIGRATION_LOCK_KEY)
