"""An execution's status holds up to 32 characters ("compensation_failed" is 19).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return  # SQLite does not enforce a VARCHAR length: no table copy needed
    op.alter_column(
        "executions", "status", existing_type=sa.String(16), type_=sa.String(32), nullable=False
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column(
        "executions", "status", existing_type=sa.String(32), type_=sa.String(16), nullable=False
    )
