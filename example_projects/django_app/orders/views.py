from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from orders.models import Order
from orders.served_by import served_by


@csrf_exempt
def orders(request: HttpRequest) -> JsonResponse:
    """GET: count and latest orders. POST: create one and NOTIFY the listener (via the pooler)."""
    if request.method == "POST":
        body = json.loads(request.body or b"{}")
        with transaction.atomic():
            order = Order.objects.create(
                customer=body.get("customer", "anon"), total_cents=int(body.get("total_cents", 0))
            )
            with connection.cursor() as cursor:  # delivered when the transaction commits
                cursor.execute("SELECT pg_notify('orders', %s)", [str(order.pk)])
            where = served_by(connection)
        return JsonResponse({"id": order.pk, "served_by": where}, status=201)
    latest = list(Order.objects.order_by("-id").values("id", "customer", "total_cents")[:5])
    return JsonResponse(
        {"count": Order.objects.count(), "latest": latest, "served_by": served_by(connection)}
    )


async def orders_async(request: HttpRequest) -> JsonResponse:
    count = await Order.objects.acount()
    where = await sync_to_async(served_by)(connection)
    return JsonResponse({"count": count, "served_by": where})
