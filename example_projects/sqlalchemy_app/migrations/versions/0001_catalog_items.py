"""catalog items, with an index built CONCURRENTLY (needs a real session: the direct endpoint)

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column(
            "created", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "catalog_items_name_idx", "catalog_items", ["name"], postgresql_concurrently=True
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("catalog_items_name_idx", "catalog_items", postgresql_concurrently=True)
    op.drop_table("catalog_items")
