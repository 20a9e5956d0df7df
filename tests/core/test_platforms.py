"""Platform detection and the ``idle_timeout="auto"`` rule both adapters share (issue 24)."""

from __future__ import annotations

import pytest

from neon_connect import ConfigurationError, resolve
from neon_connect._platforms import ELASTIC_IDLE_TIMEOUT, PLATFORMS, idle_timeout

POOLED = resolve("postgresql://u:p@ep-x-123-pooler.us-east-2.aws.neon.tech/db").app
DIRECT = resolve("postgresql://u:p@ep-x-123.us-east-2.aws.neon.tech/db").direct


@pytest.mark.parametrize(("variable", "name", "kind"), PLATFORMS)
def test_auto_limits_idle_pooler_connections_on_elastic_platforms_only(variable, name, kind):
    env = {variable: "1"}
    expected = ELASTIC_IDLE_TIMEOUT if kind == "elastic" else None
    assert idle_timeout("auto", app=POOLED, env=env, where="f") == expected
    assert idle_timeout("auto", app=DIRECT, env=env, where="f") is None  # no pooler


def test_seconds_and_none_stand_and_anything_else_names_the_option():
    assert idle_timeout(3, app=POOLED, env={}, where="f") == 3.0
    assert idle_timeout(None, app=POOLED, env={"K_SERVICE": "s"}, where="f") is None
    for wrong in (0, -1, True, "10", "soon"):
        with pytest.raises(ConfigurationError, match=r"create_engine\(idle_timeout="):
            idle_timeout(wrong, app=POOLED, env={}, where="create_engine")  # type: ignore[arg-type]
