"""Views for the replica tests: each reports the names it read and where it read them."""

from __future__ import annotations

from django.db.models.expressions import RawSQL
from django.http import HttpRequest, JsonResponse

from tests.djangoapp.models import Item


def _rows():  # type: ignore[no-untyped-def]
    # one query returns the data and whether the server that served it is a replica
    return Item.objects.annotate(replica=RawSQL("pg_is_in_recovery()", [])).values_list(
        "name", "replica"
    )


def _answer(rows: list[tuple[str, bool]]) -> JsonResponse:
    return JsonResponse({"names": [n for n, _ in rows], "replica": sorted({r for _, r in rows})})


def read(request: HttpRequest) -> JsonResponse:
    return _answer(list(_rows()))


def write_then_read(request: HttpRequest) -> JsonResponse:
    Item.objects.create(name=request.GET["name"])
    return _answer(list(_rows()))


async def aread(request: HttpRequest) -> JsonResponse:
    return _answer([row async for row in _rows()])


async def awrite_then_read(request: HttpRequest) -> JsonResponse:
    await Item.objects.acreate(name=request.GET["name"])
    return _answer([row async for row in _rows()])
