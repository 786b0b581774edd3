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

The unit of work does this itself, and tells the signal *which* messages it committed
and when (:func:`take_written`, :meth:`OutboxSignal.committed`): the relay measures
the fact lag from that instant (a row's ``created_at`` is taken at its insert, which
in a grouped transaction may come well before the commit).
"""

from __future__ import annotations

import asyncio
import time
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

# conn.info key: the message ids this connection inserted since the last take_written()
_WRITTEN = "trinity_outbox_written"


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
    ids = [str(row["message_id"]) for row in rows]
    if rows:
        await conn.execute(insert(OUTBOX), rows)
        conn.info.setdefault(_WRITTEN, []).extend(ids)
    return ids


def take_written(conn: AsyncConnection) -> list[str]:
    """The message ids inserted on ``conn`` since the last call (and forget them).

    The unit of work calls it when a transaction begins (what a transaction of its own
    left behind) and right before the commit (what this one wrote).
    """
    written: list[str] | None = conn.info.pop(_WRITTEN, None)
    return written or []


class OutboxSignal:
    """Wakes the relay of this process right after a commit that added outbox rows.

    ``notify()`` (or ``committed()``) is cheap and may be called from any coroutine of
    the event loop. The waiting relay is resumed by one callback of the loop, not a
    chain of them: on a busy loop each turn costs a round of every ready callback.
    """

    def __init__(self, max_tracked: int = 100_000) -> None:
        self._set = False
        self._waiters: set[asyncio.Future[bool]] = set()
        self._committed_at: dict[str, float] = {}
        self._max_tracked = max_tracked

    def notify(self) -> None:
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(True)

    def committed(self, message_ids: Iterable[str], at: float | None = None) -> None:
        """``message_ids`` were committed ``at`` (``time.time()``, default now): notify,
        and remember the instant for :meth:`commit_time`."""
        at = time.time() if at is None else at
        tracked = self._committed_at
        for message_id in message_ids:
            tracked[message_id] = at
        # Bounded: a row another replica's relay publishes is never taken here.
        if len(tracked) > self._max_tracked:
            for message_id in list(tracked)[: len(tracked) - self._max_tracked // 2]:
                del tracked[message_id]
        self.notify()

    def commit_time(self, message_id: str) -> float | None:
        """When ``message_id`` was committed in this process (None: not known here); once."""
        return self._committed_at.pop(message_id, None)

    async def wait(self, max_wait: float | None) -> bool:
        """Wait for a notification (True) or ``max_wait`` seconds (False); clears the signal."""
        if self._set:
            self._set = False
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        timer = None if max_wait is None else loop.call_later(max_wait, _time_up, waiter)
        self._waiters.add(waiter)
        try:
            return await waiter
        finally:
            self._waiters.discard(waiter)
            if timer is not None:
                timer.cancel()
            self._set = False

    def is_set(self) -> bool:
        return self._set


def _time_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
