"""Messages for wait_for_message steps: who waits (subscriptions), what came early
(buffered messages) and which NATS subjects the published definitions listen on.

A subscription is written and deleted by engine decisions (in their transaction); a
delivery takes it (a delete that must find the row), so a message completes a step
attempt at most once however many replicas try.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution import domain as d
from trinity_execution.application.ports import BufferedMessage, Subscription
from trinity_execution.infrastructure.tables import (
    buffered_messages,
    message_routes,
    message_subscriptions,
)


@dataclass(frozen=True)
class MessageRoute:
    definition_id: str
    step_id: str
    process_name: str
    subject: str
    message_name: str
    key_field: str


# --------------------------------------------------------------------- subscriptions


async def open_subscription(
    conn: AsyncConnection, command: d.OpenMessageSubscription, now: datetime
) -> None:
    ref = command.correlation
    await conn.execute(
        insert(message_subscriptions).values(
            key=command.key,
            execution_id=ref.execution_id,
            step_id=ref.step_id,
            iteration=ref.iteration,
            attempt=ref.attempt,
            message_name=command.message_name,
            correlation_key=command.correlation_key,
            created_at=now,
        )
    )


async def close_subscription(conn: AsyncConnection, key: str) -> None:
    await conn.execute(delete(message_subscriptions).where(message_subscriptions.c.key == key))


async def find_subscription(
    conn: AsyncConnection, message_name: str, correlation_key: str, execution_id: str = ""
) -> Subscription | None:
    """The oldest step attempt waiting for the message (of ``execution_id`` when given)."""
    query = select(message_subscriptions).where(
        message_subscriptions.c.message_name == message_name
    )
    if execution_id:
        query = query.where(message_subscriptions.c.execution_id == execution_id)
    else:
        query = query.where(message_subscriptions.c.correlation_key == correlation_key)
    found = (
        await conn.execute(query.order_by(message_subscriptions.c.created_at).limit(1))
    ).first()
    return None if found is None else _subscription(found)


async def take_subscription(conn: AsyncConnection, key: str) -> bool:
    """Remove the subscription for a delivery; False when it is gone already."""
    result = await conn.execute(
        delete(message_subscriptions).where(message_subscriptions.c.key == key)
    )
    return bool(result.rowcount == 1)


def _subscription(row: Any) -> Subscription:
    return Subscription(
        key=row.key,
        execution_id=row.execution_id,
        step_id=row.step_id,
        iteration=row.iteration,
        attempt=row.attempt,
        message_name=row.message_name,
        correlation_key=row.correlation_key,
    )


# -------------------------------------------------------------------- early messages


async def buffer_message(conn: AsyncConnection, message: BufferedMessage, now: datetime) -> bool:
    """Keep a message nobody waits for yet; False when one with this id is kept already
    (a concurrent insert of the same id fails on the key: the caller's retry sees it)."""
    exists = await conn.execute(
        select(buffered_messages.c.id).where(buffered_messages.c.id == message.id)
    )
    if exists.first() is not None:
        return False
    await conn.execute(
        insert(buffered_messages).values(
            id=message.id,
            message_name=message.message_name,
            correlation_key=message.correlation_key,
            execution_id=message.execution_id,
            payload=json.dumps(message.payload),
            expires_at=message.expires_at,
            created_at=now,
        )
    )
    return True


async def take_buffered(conn: AsyncConnection, message_id: str) -> bool:
    result = await conn.execute(
        delete(buffered_messages).where(buffered_messages.c.id == message_id)
    )
    return bool(result.rowcount == 1)


async def deliverable(
    conn: AsyncConnection, now: datetime, limit: int = 100
) -> list[tuple[BufferedMessage, Subscription]]:
    """Kept messages for which a step now waits (oldest message first)."""
    s, b = message_subscriptions.c, buffered_messages.c
    matches_key = and_(b.execution_id == "", s.correlation_key == b.correlation_key)
    matches_execution = and_(b.execution_id != "", s.execution_id == b.execution_id)
    found = await conn.execute(
        select(buffered_messages, message_subscriptions.c.key.label("subscription_key"))
        .join(
            message_subscriptions,
            and_(s.message_name == b.message_name, matches_key | matches_execution),
        )
        .where(b.expires_at > now)
        .order_by(b.created_at, s.created_at)
        .limit(limit)
    )
    pairs: list[tuple[BufferedMessage, Subscription]] = []
    taken: set[str] = set()
    rows = found.all()
    keys = {row.subscription_key for row in rows}
    subscriptions = {
        sub.key: sub
        for sub in (
            _subscription(r)
            for r in await conn.execute(
                select(message_subscriptions).where(message_subscriptions.c.key.in_(keys))
            )
        )
    }
    for row in rows:
        if row.id in taken or row.subscription_key in taken:
            continue
        taken.update((row.id, row.subscription_key))
        pairs.append((_buffered(row), subscriptions[row.subscription_key]))
    return pairs


async def count_kept(conn: AsyncConnection, now: datetime) -> int:
    found = await conn.scalar(
        select(func.count())
        .select_from(buffered_messages)
        .where(buffered_messages.c.expires_at > now)
    )
    return int(found or 0)


async def purge_expired(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(
        delete(buffered_messages).where(buffered_messages.c.expires_at <= now)
    )
    return int(result.rowcount or 0)


def _buffered(row: Any) -> BufferedMessage:
    return BufferedMessage(
        id=row.id,
        message_name=row.message_name,
        correlation_key=row.correlation_key,
        execution_id=row.execution_id,
        payload=json.loads(row.payload),
        expires_at=row.expires_at,
    )


# ------------------------------------------------------------------------ routes


async def replace_routes(
    conn: AsyncConnection, definition_id: str, routes: list[MessageRoute]
) -> None:
    """A published version's NATS-listening steps (kept while running executions of any
    published version may wait; archived versions stop listening)."""
    await conn.execute(
        delete(message_routes).where(message_routes.c.definition_id == definition_id)
    )
    if routes:
        await conn.execute(
            insert(message_routes),
            [
                {
                    "definition_id": r.definition_id,
                    "step_id": r.step_id,
                    "process_name": r.process_name,
                    "subject": r.subject,
                    "message_name": r.message_name,
                    "key_field": r.key_field,
                    "active": 1,
                }
                for r in routes
            ],
        )


async def deactivate_routes(conn: AsyncConnection, definition_id: str) -> None:
    await conn.execute(
        update(message_routes)
        .where(message_routes.c.definition_id == definition_id)
        .values(active=0)
    )


async def active_routes(conn: AsyncConnection) -> list[MessageRoute]:
    found = await conn.execute(select(message_routes).where(message_routes.c.active == 1))
    return [
        MessageRoute(
            definition_id=r.definition_id,
            step_id=r.step_id,
            process_name=r.process_name,
            subject=r.subject,
            message_name=r.message_name,
            key_field=r.key_field,
        )
        for r in found
    ]
