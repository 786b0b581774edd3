"""The execution service's tables (SQLAlchemy Core; the ORM stays off the hot path)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
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

# One row per execution; `state` is the engine's compact JSON state without its steps
# (ExecutionState.header_dict) and `revision` guards it and the execution's
# execution_steps rows (optimistic concurrency between replicas).
executions = Table(
    "executions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("process_id", String(64), nullable=False),
    Column("process_name", String(255), nullable=False),
    Column("process_version", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("trigger_kind", String(16), nullable=False),
    Column("triggered_by", String(255), nullable=False, server_default=""),
    Column("state", Text, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("fact_count", Integer, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Index("ix_executions_process_created", "process_name", "created_at"),
    Index("ix_executions_status_created", "status", "created_at"),
    Index("ix_executions_created", "created_at"),
)

# Outgoing commands (RequestWork, RequestApproval, Cancel…), written in the
# decision's transaction and sent by the dispatcher until accepted.
dispatches = Table(
    "dispatches",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("execution_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # pending, done, rejected
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("result_id", String(64), nullable=True),  # work id or approval id once accepted
    Column(
        "target_key", String(255), nullable=True
    ),  # for cancels: the key of the command to cancel
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # W3C traceparent of the decision that wrote the command (NULL with tracing off).
    Column("traceparent", String(64), nullable=True),
    Index(
        "ix_dispatches_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    Index("ix_dispatches_execution", "execution_id"),
)

# Durable timers: timer steps, step timeouts, retry backoffs.
timers = Table(
    "timers",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("execution_id", String(64), nullable=False),
    Column("fire_at", DateTime(timezone=True), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # pending, fired, cancelled
    # W3C traceparent of the decision that started it (NULL with tracing off).
    Column("traceparent", String(64), nullable=True),
    Index(
        "ix_timers_due",
        "fire_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

# Each execution's facts in its own order, for WatchExecution (the outbox is
# pruned once published; this keeps an execution's record while it is watched).
execution_facts = Table(
    "execution_facts",
    metadata,
    Column("execution_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("ce_type", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("occur_time", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("execution_id", "sequence", name="pk_execution_facts"),
)

# Schedule and event triggers of the latest published version of each process,
# kept from the definition service's facts.
triggers = Table(
    "triggers",
    metadata,
    Column("definition_id", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("process_name", String(255), nullable=False),
    Column("process_version", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # schedule, event
    Column("cron", String(255), nullable=False, server_default=""),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("subject", String(255), nullable=False, server_default=""),
    Column("input", Text, nullable=False, server_default="{}"),
    Column("next_fire_at", DateTime(timezone=True), nullable=True),
    Column("active", Integer, nullable=False),
    PrimaryKeyConstraint("definition_id", "position", name="pk_triggers"),
    Index("ix_triggers_name", "process_name"),
    Index("ix_triggers_due", "active", "next_fire_at"),
)

# The wait_for_message steps of published definitions that listen on a NATS subject.
message_routes = Table(
    "message_routes",
    metadata,
    Column("definition_id", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("process_name", String(255), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("message_name", String(128), nullable=False),
    Column("key_field", String(128), nullable=False),
    Column("active", Integer, nullable=False),
    PrimaryKeyConstraint("definition_id", "step_id", name="pk_message_routes"),
)

# One row per step attempt waiting for a message (written with the decision that
# started it, deleted by the delivery or the decision that ends the wait).
message_subscriptions = Table(
    "message_subscriptions",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("execution_id", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("message_name", String(128), nullable=False),
    Column("correlation_key", String(512), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_message_subscriptions_match", "message_name", "correlation_key"),
    Index("ix_message_subscriptions_execution", "execution_id", "message_name"),
)

# Messages that arrived before any step waited for them, kept until expires_at.
buffered_messages = Table(
    "buffered_messages",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("message_name", String(128), nullable=False),
    Column("correlation_key", String(512), nullable=False),
    Column("execution_id", String(64), nullable=False, server_default=""),
    Column("payload", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_buffered_messages_match", "message_name", "correlation_key"),
    Index("ix_buffered_messages_expiry", "expires_at"),
)

# The cold part of for_each steps (domain/items.py): one row per item of a step attempt
# (``request``), written when the step starts; its result written when the item ends.
# A decision loads only the rows it may need, so an item costs the same with 1,000.
for_each_items = Table(
    "for_each_items",
    metadata,
    Column("execution_id", String(64), nullable=False),
    Column("request", String(512), nullable=False),
    Column("position", Integer, nullable=False),
    Column("item", Text, nullable=False),
    Column("ended", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("output", Text, nullable=True),
    PrimaryKeyConstraint("execution_id", "request", "position", name="pk_for_each_items"),
)

# Each step's compact JSON state (StepState.to_dict), apart from the execution's row so
# a decision rewrites only the steps it changed (Decision.changed_steps) and a step costs
# the same in a process of 10 steps or 1,000. Written only in the transaction that moves
# the execution's revision on.
execution_steps = Table(
    "execution_steps",
    metadata,
    Column("execution_id", String(64), nullable=False),
    Column("step_id", String(128), nullable=False),
    Column("state", Text, nullable=False),
    PrimaryKeyConstraint("execution_id", "step_id", name="pk_execution_steps"),
)
