"""The measured view: two reads and a write in ``atomic()``, on the alias named in the URL."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from .models import Item


def item_view(request: HttpRequest, alias: str) -> HttpResponse:
    items = Item.objects.using(alias)
    exists = items.filter(pk=1).exists()
    last = items.order_by("-pk").first()
    with transaction.atomic(using=alias):
        created = items.create(note="hit")
    return JsonResponse({"exists": exists, "last": last.pk if last else None, "id": created.pk})


urlpatterns = [path("django/<str:alias>", item_view)]
