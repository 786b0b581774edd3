"""Work requests and the platform tables (outbox, inbox, idempotency).

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

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "work_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("execution_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("step_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("iteration", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("timeout_ms", sa.BigInteger, nullable=False),
        sa.Column("max_deliveries", sa.Integer, nullable=False),
        sa.Column("delivery", sa.Integer, nullable=False),
        sa.Column("releases", sa.Integer, nullable=False, server_default="0"),
        sa.Column("executor_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("cancel_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("progress", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_work_created", "work_requests", ["created_at", "id"])
    op.create_index("ix_work_execution_created", "work_requests", ["execution_id", "created_at"])
    op.create_index("ix_work_status_created", "work_requests", ["status", "created_at"])
    op.create_index("ix_work_kind_created", "work_requests", ["kind", "created_at"])
    op.create_index(
        "ix_work_lease",
        "work_requests",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'started'"),
        sqlite_where=sa.text("status = 'started'"),
    )


def downgrade() -> None:
    op.drop_table("work_requests")
    drop_platform_tables(op)
