"""Schedule and event triggers of published definitions.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("process_name", sa.String(255), nullable=False),
        sa.Column("process_version", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("cron", sa.String(255), nullable=False, server_default=""),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("subject", sa.String(255), nullable=False, server_default=""),
        sa.Column("input", sa.Text, nullable=False, server_default="{}"),
        sa.Column("next_fire_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("definition_id", "position", name="pk_triggers"),
    )
    op.create_index("ix_triggers_name", "triggers", ["process_name"])
    op.create_index("ix_triggers_due", "triggers", ["active", "next_fire_at"])


def downgrade() -> None:
    op.drop_table("triggers")
