"""SQLAlchemy Core tables of the work service (plus the platform's outbox, inbox, idempotency)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from trinity_platform.db import platform_tables

metadata = MetaData()
OUTBOX, INBOX, IDEMPOTENCY = platform_tables(metadata)

_TS = DateTime(timezone=True)

work_requests = Table(
    "work_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("request_id", String(255), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("payload", Text, nullable=False),
    Column("execution_id", String(255), nullable=False, server_default=""),
    Column("step_id", String(255), nullable=False, server_default=""),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("timeout_ms", BigInteger, nullable=False),
    Column("max_deliveries", Integer, nullable=False),
    Column("delivery", Integer, nullable=False),
    Column("releases", Integer, nullable=False, server_default="0"),
    Column("executor_id", String(255), nullable=False, server_default=""),
    Column("lease_expires_at", _TS, nullable=True),
    Column("result", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("cancel_reason", Text, nullable=False, server_default=""),
    Column("progress", Text, nullable=False, server_default=""),
    Column("created_at", _TS, nullable=False),
    Column("started_at", _TS, nullable=True),
    Column("ended_at", _TS, nullable=True),
    Column("updated_at", _TS, nullable=False),
    Column("version", Integer, nullable=False),
    Index("ix_work_created", "created_at", "id"),
    Index("ix_work_execution_created", "execution_id", "created_at"),
    Index("ix_work_status_created", "status", "created_at"),
    Index("ix_work_kind_created", "kind", "created_at"),
    Index(
        "ix_work_lease",
        "lease_expires_at",
        postgresql_where=text("status = 'started'"),
        sqlite_where=text("status = 'started'"),
    ),
)
