"""ReplicaRouter against a real streaming replica: reads there, writes and read-your-writes here."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connections, router, transaction
from django.test import AsyncClient, Client, override_settings

import neon_django
from neon_django.routers import _SCOPE, ReplicaRouter, sticky_scope
from neon_local.pytest_plugin import NeonLocal
from neon_local.replica import Replica
from tests.djangoapp.models import Item

ALIAS = "replica_1"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, databases=["default", ALIAS]),
]


@pytest.fixture(scope="module", autouse=True)
def replica_alias(
    django_db_setup: Any, neon_local: NeonLocal, neon_local_replica: Replica
) -> Iterator[dict[str, Any]]:
    """``replica_1`` from ``neon_django.databases()``, mirrored onto the test database as
    Django's test runner mirrors it, with the router and its middleware installed."""
    env = {**neon_local.env(), "DATABASE_URL_REPLICA": neon_local_replica.pooled_url}
    built = neon_django.databases(env=env)
    assert list(built) == ["default", ALIAS]
    # Django's defaults filled in as at start-up (it insists on a 'default' beside)
    filled = connections.configure_settings({"default": {}, ALIAS: built[ALIAS]})
    replica = filled[ALIAS]
    connections.settings[ALIAS] = replica
    assert replica["TEST"]["MIRROR"] == "default"
    connections[ALIAS].creation.set_as_test_mirror(connections["default"].settings_dict)
    overrides = override_settings(
        DATABASE_ROUTERS=["neon_django.routers.ReplicaRouter"],
        MIDDLEWARE=["neon_django.routers.ReplicaStickinessMiddleware"],
        ROOT_URLCONF="tests.replicas.urls",
    )
    overrides.enable()
    try:
        yield replica
    finally:
        overrides.disable()
        connections[ALIAS].close()
        del connections[ALIAS]
        del connections.settings[ALIAS]


@pytest.fixture(autouse=True)
def no_sticky_scope() -> Iterator[None]:
    """Each test starts unscoped: a write outside a scope keeps its thread on the primary."""
    token = _SCOPE.set(None)
    yield
    _SCOPE.reset(token)


def _name() -> str:
    return f"item-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def baseline(neon_local: NeonLocal, neon_local_replica: Replica) -> str:
    """One committed row the replica has replayed (every read returns at least a row)."""
    name = _name()
    Item.objects.using("default").create(name=name)
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    return name


def _get(client: Client, path: str) -> dict[str, Any]:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return dict(response.json())


async def _aget(client: AsyncClient, path: str) -> dict[str, Any]:
    response = await client.get(path)
    assert response.status_code == 200, response.content
    return dict(response.json())


def test_reads_land_on_the_replica(baseline: str) -> None:
    answer = _get(Client(), "/read/")
    assert answer["replica"] == [True]  # pg_is_in_recovery() on the serving connection
    assert baseline in answer["names"]


async def test_async_reads_land_on_the_replica(baseline: str) -> None:
    answer = await _aget(AsyncClient(), "/aread/")
    assert answer["replica"] == [True]
    assert baseline in answer["names"]


def test_writes_land_on_the_primary(neon_local: NeonLocal, baseline: str) -> None:
    name = _name()
    Item.objects.create(name=name)
    test_db = connections["default"].settings_dict["NAME"]
    with psycopg.connect(neon_local.direct_url, dbname=test_db) as primary:
        assert primary.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        count = primary.execute("SELECT count(*) FROM djangoapp_item WHERE name = %s", (name,))
        assert count.fetchone() == (1,)


def test_control_a_write_on_the_replica_fails(baseline: str) -> None:
    """Why writes must not follow reads: the replica refuses them."""
    from django.db import InternalError, OperationalError

    with pytest.raises((InternalError, OperationalError), match="read-only transaction"):
        Item.objects.using(ALIAS).create(name=_name())


@pytest.mark.parametrize("prefix", ["", "a"], ids=["sync", "async"])
async def test_sticky_after_write_while_the_replica_lags(
    neon_local: NeonLocal, neon_local_replica: Replica, baseline: str, prefix: str
) -> None:
    client = AsyncClient()
    name = _name()
    with neon_local_replica.lagging():  # WAL replay paused: the replica keeps old data
        mine = await _aget(client, f"/{prefix}write-then-read/?name={name}")
        assert mine["replica"] == [False]  # the writing request read on the primary...
        assert name in mine["names"]  # ...and saw its own write
        other = await _aget(client, f"/{prefix}read/")
        assert other["replica"] == [True]  # an unrelated request reads the replica...
        assert name not in other["names"]  # ...which is stale: what stickiness protects from
        assert baseline in other["names"]
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    assert name in (await _aget(client, f"/{prefix}read/"))["names"]


def test_sync_client_sticky_after_write(neon_local_replica: Replica, baseline: str) -> None:
    client = Client()
    name = _name()
    with neon_local_replica.lagging():
        mine = _get(client, f"/write-then-read/?name={name}")
        assert (mine["replica"], name in mine["names"]) == ([False], True)
        other = _get(client, "/read/")
        assert (other["replica"], name in other["names"]) == ([True], False)


def test_reads_inside_atomic_stay_on_the_primary(baseline: str) -> None:
    with sticky_scope():
        assert Item.objects.all().db == ALIAS
        with transaction.atomic():
            assert Item.objects.all().db == "default"
        assert Item.objects.all().db == ALIAS  # no write happened in the block
        with transaction.atomic():
            Item.objects.create(name=_name())
        assert Item.objects.all().db == "default"  # wrote: sticky for the rest of the scope


def test_reads_inside_direct_stay_on_the_primary(baseline: str) -> None:
    """direct() asks for the primary's real session (temp tables, SET, streaming cursors)."""
    with sticky_scope():
        assert Item.objects.all().db == ALIAS
        with neon_django.direct():
            assert Item.objects.all().db == "default"
        assert Item.objects.all().db == ALIAS


def test_migrations_never_run_on_replicas() -> None:
    assert router.allow_migrate(ALIAS, "djangoapp", model_name="item") is False
    assert router.allow_migrate("default", "djangoapp", model_name="item") is True


def test_a_replica_that_is_down_is_skipped_with_a_log_line(
    neon_local: NeonLocal,
    neon_local_replica: Replica,
    baseline: str,
    caplog: pytest.LogCaptureFixture,
    replica_alias: dict[str, Any],
) -> None:
    the_router = next(r for r in router.routers if isinstance(r, ReplicaRouter))
    budget = replica_alias["NEON"]["RETRY"].timeout
    connections[ALIAS].close()
    neon_local_replica.stop()
    try:
        caplog.set_level(logging.WARNING, logger="neon_django.replicas")
        started = time.monotonic()
        answer = _get(Client(), "/read/")
        elapsed = time.monotonic() - started
        assert answer["replica"] == [False]  # served by the primary
        assert baseline in answer["names"]
        assert elapsed < budget + 5  # within the replica's retry budget (plus the read)
        warned = [r.getMessage() for r in caplog.records if r.name == "neon_django.replicas"]
        assert len(warned) == 1 and "'replica_1'" in warned[0], warned
        assert str(neon_local_replica.pooler_port) in warned[0]
        assert neon_local.state.password not in caplog.text
        # the next read does not wait for the replica again, and says nothing new
        started = time.monotonic()
        assert _get(Client(), "/read/")["replica"] == [False]
        assert time.monotonic() - started < budget
        assert len([r for r in caplog.records if r.name == "neon_django.replicas"]) == 1
        # control: without the router's fallback, a read pinned to the replica fails
        from django.db import OperationalError

        with pytest.raises(OperationalError, match="Connection refused|connection failed"):
            Item.objects.using(ALIAS).count()
        connections[ALIAS].close()
    finally:
        neon_local_replica.start()
        the_router._down.clear()  # the router would try it again after retry_after
    neon_local_replica.catch_up(neon_local.state.superuser_url)
    assert _get(Client(), "/read/")["replica"] == [True]


async def test_outside_a_request_an_async_write_keeps_the_task_on_the_primary(
    baseline: str,
) -> None:
    """The flag set in sync_to_async's worker thread comes back to the calling task."""
    from asgiref.sync import sync_to_async

    def routed() -> str:
        return str(Item.objects.all().db)

    assert await sync_to_async(routed)() == ALIAS
    await Item.objects.acreate(name=_name())
    assert await sync_to_async(routed)() == "default"


# -- the replica list: scanned once per DATABASES, afresh after override_settings ----------


def _related_pair() -> tuple[Item, Item]:
    """Two unsaved rows as if read from the primary and from the replica."""
    first, second = Item(name=_name()), Item(name=_name())
    first._state.db, second._state.db = "default", ALIAS
    return first, second


def test_the_replica_list_is_scanned_once_across_many_reads(
    monkeypatch: pytest.MonkeyPatch, baseline: str
) -> None:
    scans: list[str] = []
    scan = neon_django.routers._scan_replicas

    def counting_scan(primary: str) -> tuple[str, ...]:
        scans.append(primary)
        return scan(primary)

    monkeypatch.setattr("neon_django.routers._scan_replicas", counting_scan)
    the_router = ReplicaRouter()  # nothing cached yet
    first, second = _related_pair()
    for _ in range(50):
        assert the_router.db_for_read(Item) == ALIAS
        assert the_router.allow_relation(first, second) is True
        assert the_router.allow_migrate(ALIAS, "djangoapp", model_name="item") is False
        assert the_router.allow_migrate("default", "djangoapp", model_name="item") is None
    assert scans == ["default"]
    # a caller that changes the returned list does not change the router's
    the_router.replicas().append("default")
    assert the_router.replicas() == [ALIAS]
    assert scans == ["default"]


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES:UserWarning")
def test_the_router_sees_the_replicas_override_settings_puts_in_databases(
    monkeypatch: pytest.MonkeyPatch, replica_alias: dict[str, Any]
) -> None:
    the_router = next(r for r in router.routers if isinstance(r, ReplicaRouter))
    assert the_router.replicas() == [ALIAS]  # cached before the override
    monkeypatch.setattr(the_router, "_usable", lambda alias: alias == "replica_2")  # no connect
    added = {**settings.DATABASES, "replica_2": replica_alias}
    with override_settings(DATABASES=added):
        assert the_router.replicas() == [ALIAS, "replica_2"]
        assert router.allow_migrate("replica_2", "djangoapp", model_name="item") is False
        assert the_router.db_for_read(Item) == "replica_2"
    with override_settings(DATABASES={"default": settings.DATABASES["default"]}):
        assert the_router.replicas() == []
        assert the_router.db_for_read(Item) is None  # no replica: Django's default
        assert router.allow_migrate(ALIAS, "djangoapp", model_name="item") is True
    # back to the settings the module started with
    assert the_router.replicas() == [ALIAS]
    assert router.allow_migrate("replica_2", "djangoapp", model_name="item") is True
