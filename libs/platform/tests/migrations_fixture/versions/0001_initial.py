"""initial: platform tables and widgets

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from trinity_platform.alembic_env import create_platform_tables, drop_platform_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "widgets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50)),
    )


def downgrade() -> None:
    op.drop_table("widgets")
    drop_platform_tables(op)
