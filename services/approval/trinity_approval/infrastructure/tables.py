"""The approval service's tables (SQLAlchemy Core) plus the platform's outbox,
inbox and idempotency tables."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

from trinity_platform.db import platform_tables

metadata = MetaData()
OUTBOX, INBOX, IDEMPOTENCY = platform_tables(metadata)

_ID = BigInteger().with_variant(Integer(), "sqlite")
_TS = DateTime(timezone=True)

# One row per approval; `version` guards it (optimistic concurrency between replicas).
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("execution_id", String(64), nullable=False),
    Column("step_id", String(255), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("title", Text, nullable=False),
    Column("approvers", Text, nullable=False),  # JSON list, as requested
    Column("deadline", _TS, nullable=False),
    Column("on_timeout", String(16), nullable=False),
    Column("artifacts", Text, nullable=False),  # JSON list of {name, reference, text}
    Column("status", String(16), nullable=False),
    Column("decision", String(16), nullable=True),
    Column("decided_by", String(255), nullable=False, server_default=""),
    Column("comment", Text, nullable=False, server_default=""),
    Column("decided_at", _TS, nullable=True),
    Column("decision_request_id", String(255), nullable=False, server_default=""),
    Column("reminder_interval_us", BigInteger, nullable=True),
    Column("max_reminders", Integer, nullable=False),
    Column("reminders_sent", Integer, nullable=False),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
    Column("version", Integer, nullable=False),
    # The deadline watcher and ListPendingApprovals: pending ones by deadline.
    Index(
        "ix_approvals_pending_deadline",
        "deadline",
        "id",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("ix_approvals_execution_created", "execution_id", "created_at", "id"),
)

# Who may decide what: one row per approval and approver (case-folded), for
# ListPendingApprovals(approver).
approval_approvers = Table(
    "approval_approvers",
    metadata,
    Column("approval_id", String(64), ForeignKey("approvals.id"), nullable=False),
    Column("approver", String(255), nullable=False),
    PrimaryKeyConstraint("approval_id", "approver", name="pk_approval_approvers"),
    Index("ix_approval_approvers_approver", "approver"),
)

# Notifications to approvers, written in the transaction of the change that needs
# them and sent to the work service (RequestWork, idempotency key = `key`) by the
# notification sender until accepted.
dispatches = Table(
    "dispatches",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("approval_id", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),  # a serialized RequestWorkRequest
    Column("status", String(16), nullable=False),  # pending, done, failed, obsolete
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", _TS, nullable=False),
    Column("work_id", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", _TS, nullable=False),
    Index(
        "ix_dispatches_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("ix_dispatches_approval", "approval_id"),
)
