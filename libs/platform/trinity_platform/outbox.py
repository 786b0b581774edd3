"""Writing facts and intents to the outbox, inside the caller's transaction.

The pattern (invariant 1, "facts only after persistence")::

    async with engine.begin() as conn:          # one transaction
        await repository.save(conn, aggregate)  # the state change
        await add_to_outbox(conn, message=fact, subject=fact_subject("work", "WorkCompleted"),
                            aggregate_id=aggregate.id, correlation_id=execution_id)
    signal.notify()                              # after the commit: wake the relay now

If the process dies between the commit and ``notify()``, nothing is lost: the relay
also polls. Never call ``notify()`` before the commit (the relay would find nothing
and sleep until the next poll).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import Message
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_platform.db import OUTBOX
from trinity_platform.telemetry import current_traceparent
from trinity_platform.unit_of_work import NewEvents, event_message_id


@dataclass(frozen=True)
class OutboxMessage:
    """One message to publish; see :func:`add_to_outbox` for the fields."""

    message: Message
    subject: str
    aggregate_id: str
    correlation_id: str = ""
    causation_id: str = ""
    message_id: str | None = None


def new_message_id() -> str:
    """The id of a message that no aggregate change names (see :func:`event_outbox_messages`)."""
    return str(uuid.uuid4())


def event_outbox_messages(change: NewEvents) -> list[OutboxMessage]:
    """The outbox rows of one aggregate's change, ids by :func:`event_message_id`."""
    return [
        OutboxMessage(
            message=item.message,
            subject=item.subject,
            aggregate_id=change.aggregate_id,
            correlation_id=item.correlation_id,
            causation_id=item.causation_id,
            message_id=event_message_id(change.kind, change.aggregate_id, change.version, index),
        )
        for index, item in enumerate(change.messages)
    ]


def _row(item: OutboxMessage, now: datetime, traceparent: str | None) -> dict[str, object]:
    if not item.subject:
        raise ValueError("outbox message needs a subject")
    return {
        "message_id": item.message_id or new_message_id(),
        "subject": item.subject,
        "ce_type": item.message.DESCRIPTOR.full_name,
        "ce_subject": item.aggregate_id,
        "correlation_id": item.correlation_id,
        "causation_id": item.causation_id,
        "payload": item.message.SerializeToString(deterministic=True),
        "created_at": now,
        "published_at": None,
        "traceparent": traceparent,
    }


async def add_to_outbox(
    conn: AsyncConnection,
    *,
    message: Message,
    subject: str,
    aggregate_id: str,
    correlation_id: str = "",
    causation_id: str = "",
    message_id: str | None = None,
) -> str:
    """Insert one outbox row in ``conn``'s transaction; returns its message id (``ce-id``).

    ``aggregate_id`` becomes ``ce-subject``; ``correlation_id`` is the execution id
    where there is one; ``causation_id`` the id of the message that caused this one.
    A deterministic ``message_id`` (e.g. derived from the command's idempotency key)
    makes a repeated write collide instead of duplicating.
    """
    ids = await add_many_to_outbox(
        conn,
        [
            OutboxMessage(
                message=message,
                subject=subject,
                aggregate_id=aggregate_id,
                correlation_id=correlation_id,
                causation_id=causation_id,
                message_id=message_id,
            )
        ],
    )
    return ids[0]


async def add_many_to_outbox(conn: AsyncConnection, items: Iterable[OutboxMessage]) -> list[str]:
    """Insert several rows in order (one statement); returns their message ids."""
    now = datetime.now(UTC)
    traceparent = current_traceparent()  # the span that made this change (None: tracing off)
    rows = [_row(item, now, traceparent) for item in items]
    if rows:
        await conn.execute(insert(OUTBOX), rows)
    return [str(row["message_id"]) for row in rows]


class OutboxSignal:
    """Wakes the relay of this process right after a commit that added outbox rows.

    ``notify()`` is cheap and may be called from any coroutine of the event loop.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, max_wait: float | None) -> bool:
        """Wait for a notification (True) or ``max_wait`` seconds (False); clears the signal."""
        try:
            if max_wait is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), max_wait)
        except TimeoutError:
            return False
        finally:
            self._event.clear()
        return True

    def is_set(self) -> bool:
        return self._event.is_set()
