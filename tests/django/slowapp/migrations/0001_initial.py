"""A migration that takes 2 seconds, holding its new table's catalog rows uncommitted."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Thing",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=100)),
            ],
        ),
        migrations.RunSQL("SELECT pg_sleep(2)", reverse_sql=migrations.RunSQL.noop),
    ]
