"""Approvals, their approvers, notification dispatches and the platform tables.

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

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=False),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("approvers", sa.Text, nullable=False),
        sa.Column("deadline", _TS, nullable=False),
        sa.Column("on_timeout", sa.String(16), nullable=False),
        sa.Column("artifacts", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("comment", sa.Text, nullable=False, server_default=""),
        sa.Column("decided_at", _TS, nullable=True),
        sa.Column("decision_request_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("reminder_interval_us", sa.BigInteger, nullable=True),
        sa.Column("max_reminders", sa.Integer, nullable=False),
        sa.Column("reminders_sent", sa.Integer, nullable=False),
        sa.Column("cancel_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index(
        "ix_approvals_pending_deadline",
        "approvals",
        ["deadline", "id"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_approvals_execution_created", "approvals", ["execution_id", "created_at", "id"]
    )
    op.create_table(
        "approval_approvers",
        sa.Column("approval_id", sa.String(64), sa.ForeignKey("approvals.id"), nullable=False),
        sa.Column("approver", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("approval_id", "approver", name="pk_approval_approvers"),
    )
    op.create_index("ix_approval_approvers_approver", "approval_approvers", ["approver"])
    op.create_table(
        "dispatches",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("approval_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("work_id", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index(
        "ix_dispatches_due",
        "dispatches",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_dispatches_approval", "dispatches", ["approval_id"])


def downgrade() -> None:
    op.drop_table("dispatches")
    op.drop_table("approval_approvers")
    op.drop_table("approvals")
    drop_platform_tables(op)
