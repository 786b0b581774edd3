"""Consumer-side dedupe: remember processed message ids in the consumer's transaction.

async with engine.begin() as conn:
    if not await claim_message(conn, "execution.work-facts", envelope.id):
        return Ack()                       # a redelivery: the effect is already there
    await apply_effect(conn, ...)          # same transaction as the claim
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Insert, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform.db import INBOX
from trinity_platform.statements import PerDialect


def _claim(dialect: str) -> Insert:
    if dialect == "postgresql":
        stmt = postgresql.insert(INBOX).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(INBOX).on_conflict_do_nothing()  # type: ignore[assignment]
    else:  # pragma: no cover - only the two supported dialects
        raise NotImplementedError(f"inbox does not support {dialect}")
    return stmt.returning(INBOX.c.message_id)


_CLAIM = PerDialect(_claim)  # every consumed message claims: built once (see statements)


async def claim_message(conn: AsyncConnection, consumer: str, message_id: str) -> bool:
    """Record ``message_id`` as processed by ``consumer``; False when it already was.

    Uses ``INSERT … ON CONFLICT DO NOTHING``: on PostgreSQL a concurrent claim of
    the same id waits for the first transaction and then returns False (or True if
    that one rolled back).
    """
    values = {"consumer": consumer, "message_id": message_id, "processed_at": datetime.now(UTC)}
    result = await conn.execute(_CLAIM(conn), values)
    return result.first() is not None


async def prune_inbox(engine: AsyncEngine, older_than: timedelta) -> int:
    """Forget ids processed before ``now - older_than``; returns how many rows went.

    Keep ``older_than`` well above the longest redelivery horizon of the consumers
    (JetStream ``max_deliver`` times backoff, and the streams' duplicate window).
    """
    cutoff = datetime.now(UTC) - older_than
    async with engine.begin() as conn:
        result = await conn.execute(delete(INBOX).where(INBOX.c.processed_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
