"""Messages for wait_for_message steps: routes, subscriptions and early messages.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_routes",
        sa.Column("definition_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(128), nullable=False),
        sa.Column("process_name", sa.String(255), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("message_name", sa.String(128), nullable=False),
        sa.Column("key_field", sa.String(128), nullable=False),
        sa.Column("active", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("definition_id", "step_id", name="pk_message_routes"),
    )
    op.create_table(
        "message_subscriptions",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(128), nullable=False),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("message_name", sa.String(128), nullable=False),
        sa.Column("correlation_key", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_message_subscriptions_match",
        "message_subscriptions",
        ["message_name", "correlation_key"],
    )
    op.create_index(
        "ix_message_subscriptions_execution",
        "message_subscriptions",
        ["execution_id", "message_name"],
    )
    op.create_table(
        "buffered_messages",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("message_name", sa.String(128), nullable=False),
        sa.Column("correlation_key", sa.String(512), nullable=False),
        sa.Column("execution_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_buffered_messages_match", "buffered_messages", ["message_name", "correlation_key"]
    )
    op.create_index("ix_buffered_messages_expiry", "buffered_messages", ["expires_at"])


def downgrade() -> None:
    op.drop_table("buffered_messages")
    op.drop_table("message_subscriptions")
    op.drop_table("message_routes")
