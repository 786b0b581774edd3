"""The outbox keeps the W3C traceparent of the change that wrote each message.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from trinity_platform.alembic_env import add_outbox_traceparent

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_outbox_traceparent(op)


def downgrade() -> None:
    op.drop_column("outbox", "traceparent")
