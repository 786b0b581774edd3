"""The outbox and the outgoing commands keep the W3C traceparent of the decision
that wrote them (the trace continues from there).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from trinity_platform.alembic_env import add_outbox_traceparent

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_traceparent(op)
    op.add_column("dispatches", sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("dispatches", "traceparent")
    op.drop_column("outbox", "traceparent")
