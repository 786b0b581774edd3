"""Executions, dispatches, timers, execution facts and the platform tables.

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
        "executions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("process_id", sa.String(64), nullable=False),
        sa.Column("process_name", sa.String(255), nullable=False),
        sa.Column("process_version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger_kind", sa.String(16), nullable=False),
        sa.Column("triggered_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("fact_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("ended_at", _TS, nullable=True),
    )
    op.create_index("ix_executions_process_created", "executions", ["process_name", "created_at"])
    op.create_index("ix_executions_status_created", "executions", ["status", "created_at"])
    op.create_index("ix_executions_created", "executions", ["created_at"])
    op.create_table(
        "dispatches",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("result_id", sa.String(64), nullable=True),
        sa.Column("target_key", sa.String(255), nullable=True),
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
    op.create_index("ix_dispatches_execution", "dispatches", ["execution_id"])
    op.create_table(
        "timers",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("fire_at", _TS, nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index(
        "ix_timers_due",
        "timers",
        ["fire_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "execution_facts",
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("ce_type", sa.String(255), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("occur_time", _TS, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "sequence", name="pk_execution_facts"),
    )


def downgrade() -> None:
    for table in ("execution_facts", "timers", "dispatches", "executions"):
        op.drop_table(table)
    drop_platform_tables(op)
