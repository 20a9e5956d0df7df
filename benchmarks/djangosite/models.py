from __future__ import annotations

from django.db import models


class Item(models.Model):
    """``bench_item``, created by the harness (no migrations to run per configuration)."""

    note: models.TextField[str, str] = models.TextField()

    class Meta:
        managed = False
        db_table = "bench_item"
