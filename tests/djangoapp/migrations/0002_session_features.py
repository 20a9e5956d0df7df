"""Everything that needs a real session: SET, CREATE INDEX CONCURRENTLY, a session advisory lock."""

from __future__ import annotations

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("djangoapp", "0001_initial")]
    operations = [
        migrations.RunSQL("SET lock_timeout = '5s'", reverse_sql="RESET lock_timeout"),
        migrations.RunSQL("SELECT pg_advisory_lock(424242)", reverse_sql=migrations.RunSQL.noop),
        AddIndexConcurrently("item", models.Index(fields=["name"], name="item_name_idx")),
        migrations.RunSQL("SELECT pg_advisory_unlock(424242)", reverse_sql=migrations.RunSQL.noop),
    ]
