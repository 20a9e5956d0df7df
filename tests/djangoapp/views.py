from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, JsonResponse

from tests.djangoapp.evidence import route
from tests.djangoapp.models import Item


def items(request: HttpRequest) -> JsonResponse:
    count = Item.objects.count()
    return JsonResponse({"count": count, **route(connection)})


async def items_async(request: HttpRequest) -> JsonResponse:
    count = await Item.objects.acount()
    evidence = await sync_to_async(route)(connection)
    return JsonResponse({"count": count, **evidence})
