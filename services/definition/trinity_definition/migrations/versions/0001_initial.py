"""Definitions and the platform tables (outbox, inbox, idempotency).

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

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "definitions",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("major", sa.Integer, nullable=True),
        sa.Column("minor", sa.Integer, nullable=True),
        sa.Column("spec", sa.LargeBinary, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("published_at", _TS, nullable=True),
        sa.Column("archived_at", _TS, nullable=True),
        sa.UniqueConstraint("id", name="uq_definitions_id"),
        sa.UniqueConstraint("name", "major", "minor", name="uq_definitions_name_version"),
    )
    op.create_index("ix_definitions_status_seq", "definitions", ["status", "seq"])
    op.create_index("ix_definitions_name_seq", "definitions", ["name", "seq"])


def downgrade() -> None:
    op.drop_table("definitions")
    drop_platform_tables(op)
