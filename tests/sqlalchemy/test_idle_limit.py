"""A kept connection idle past a limit is replaced at checkout (issue 24): Neon advises 5-10 s on
elastic platforms (Cloud Run, ECS/Fargate, Modal), whose frozen instances keep connections
the platform may cut meanwhile. ``idle_timeout="auto"`` sets it there, as Django's does."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

import neon_sqlalchemy
from neon_connect import ConfigurationError, _platforms

pytestmark = pytest.mark.integration


def _driver_connections(engine, pause: float) -> tuple:
    """The driver connection of two checkouts, ``pause`` seconds apart."""
    seen = []
    for i in range(2):
        if i:
            time.sleep(pause)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            seen.append(conn.connection.driver_connection)
    return tuple(seen)


@pytest.mark.parametrize("idle_timeout", [0.5, None])
def test_a_connection_idle_past_the_limit_is_replaced(neon_local, idle_timeout):
    engine = neon_sqlalchemy.create_engine(
        env=neon_local.env(), allow_client_pool=True, idle_timeout=idle_timeout
    )
    try:
        first, second = _driver_connections(engine, 1.0)
        assert (second is first) is (idle_timeout is None)  # the control keeps it
        assert first.closed == (idle_timeout is not None)
        first, second = _driver_connections(engine, 0.0)  # used again at once: kept
        assert second is first
    finally:
        engine.dispose()


@pytest.mark.parametrize(("variable", "replaced"), [("K_SERVICE", True), ("FLY_APP_NAME", False)])
def test_auto_sets_the_limit_on_an_elastic_platform(neon_local, monkeypatch, variable, replaced):
    monkeypatch.setattr(_platforms, "ELASTIC_IDLE_TIMEOUT", 0.5)  # Neon's 10 s, shortened
    env = {**neon_local.env(), variable: "app"}
    engine = neon_sqlalchemy.create_engine(env=env, allow_client_pool=True)
    try:
        first, second = _driver_connections(engine, 1.0)
        assert (second is not first) is replaced
    finally:
        engine.dispose()


def test_a_wrong_value_names_the_option():
    with pytest.raises(ConfigurationError, match=r"create_engine\(idle_timeout='soon'\)"):
        neon_sqlalchemy.create_engine(
            "postgresql://u:p@ep-x-1-pooler.us-east-2.aws.neon.tech/db",
            allow_client_pool=True,
            idle_timeout="soon",  # type: ignore[arg-type]
        )


def test_a_limit_on_an_engine_that_keeps_nothing_is_refused():
    """``NullPool`` (the default on a transaction pooler) keeps no connection: a limit given
    there would be ignored without a word, so it is refused, naming the option."""
    url = "postgresql://u:p@ep-x-1-pooler.us-east-2.aws.neon.tech/db"
    with pytest.raises(ConfigurationError, match=r"create_engine\(idle_timeout=5\).*NullPool"):
        neon_sqlalchemy.create_engine(url, idle_timeout=5)
    with pytest.raises(ConfigurationError, match=r"create_async_engine\(idle_timeout=5\)"):
        neon_sqlalchemy.create_async_engine(url, idle_timeout=5)
    for engine in (  # "auto" and None stand: nothing to refuse
        neon_sqlalchemy.create_engine(url, env={"K_SERVICE": "web"}),
        neon_sqlalchemy.create_engine(url, idle_timeout=None),
    ):
        engine.dispose()
