"""direct() in async code, and streaming .iterator() inside direct().

Async semantics: the routing belongs to the async context (a ContextVar), so the ORM calls an
async task makes inside ``with direct():`` go direct although they run on a worker thread's
connection object, and a concurrent task outside the block keeps the pooler. Evidence: a
statement's ``inet_client_port()`` is the local port of one of our own sockets to PostgreSQL
only when nothing sat in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.db.backends.signals import connection_created
from django.db.models.expressions import RawSQL

import neon_django
from tests.djangoapp.evidence import route
from tests.djangoapp.models import Item

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@contextlib.contextmanager
def direct_ports(pg_port):
    """Local ports of every socket this process opens straight to PostgreSQL in the block."""
    ports: set[int] = set()

    def record(sender, connection, **kwargs):
        raw = connection.connection
        with socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.getpeername()[1] == pg_port:
                ports.add(sock.getsockname()[1])

    connection_created.connect(record)
    try:
        yield ports
    finally:
        connection_created.disconnect(record)


async def _client_port(pk):
    """One real async ORM call; the port PostgreSQL saw its client on."""
    item = await Item.objects.annotate(client_port=RawSQL("inet_client_port()", ())).aget(pk=pk)
    return item.client_port


async def test_direct_routes_sync_to_async_calls_and_async_orm_calls(neon_local):
    item = await Item.objects.acreate(name="a")
    with direct_ports(neon_local.state.pg_port) as ports:
        with neon_django.direct():
            inside = await sync_to_async(lambda: route(connection))()
            port = await _client_port(item.pk)
            assert await Item.objects.acount() == 1
        outside = await sync_to_async(lambda: route(connection))()
        after = await _client_port(item.pk)
    assert inside["direct"] is True and port in ports
    assert outside["direct"] is False and after not in ports
    await sync_to_async(connections.close_all)()


async def test_two_concurrent_tasks_only_one_inside_direct(neon_local):
    item = await Item.objects.acreate(name="a")
    rounds = 5

    async def task(go_direct):
        seen = []
        with neon_django.direct() if go_direct else contextlib.nullcontext():
            for _ in range(rounds):
                seen.append(await _client_port(item.pk))
                await asyncio.sleep(0.01)  # let the other task's call in between
        return seen

    with direct_ports(neon_local.state.pg_port) as ports:
        direct_seen, pooled_seen = await asyncio.gather(task(True), task(False))
    assert len(direct_seen) == len(pooled_seen) == rounds
    assert all(p in ports for p in direct_seen)
    assert not any(p in ports for p in pooled_seen)
    await sync_to_async(connections.close_all)()


def _open_cursors():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
        return cursor.fetchone()[0]


def test_iterator_streams_with_a_server_side_cursor_inside_direct(neon_local):
    Item.objects.bulk_create(Item(name=f"n{i}") for i in range(5))
    pooled = Item.objects.iterator(chunk_size=1)
    next(pooled)
    assert _open_cursors() == 0  # the pooled alias fetched everything client-side
    list(pooled)
    with neon_django.direct():
        streamed = Item.objects.iterator(chunk_size=1)
        first = next(streamed)
        assert _open_cursors() == 1  # a named cursor in this session, fetched row by row
        # another client takes PgBouncer's server connections: a direct session is unaffected
        with neon_local.hold_server_connection(connection.settings_dict["NAME"]):
            rest = list(streamed)
    assert len([first, *rest]) == 5
    assert connection.settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True  # pooled again
