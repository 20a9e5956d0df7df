"""CREATE INDEX CONCURRENTLY cannot run in a transaction: atomic = False, and a real session."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("orders", "0001_initial")]
    operations = [
        AddIndexConcurrently("order", models.Index(fields=["customer"], name="order_customer_idx")),
    ]
