"""Durable timers: a decision writes them (decision_store); the poller finds the due
ones; firing claims the row in the firing decision's transaction."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.infrastructure.tables import timers


async def claim_timer(conn: AsyncConnection, timer_id: str) -> bool:
    """Mark a pending timer fired in the caller's transaction; False if it already fired or was cancelled."""
    result = await conn.execute(
        update(timers)
        .where(timers.c.id == timer_id, timers.c.status == "pending")
        .values(status="fired")
    )
    return result.rowcount == 1
