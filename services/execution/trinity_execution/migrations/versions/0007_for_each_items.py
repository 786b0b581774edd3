"""for_each items and their results kept apart from the execution's state, so one item
costs the same with 10 items or 1,000 (domain/items.py).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "for_each_items",
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("request", sa.String(512), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("item", sa.Text, nullable=False),
        sa.Column("ended", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("execution_id", "request", "position", name="pk_for_each_items"),
    )


def downgrade() -> None:
    op.drop_table("for_each_items")
