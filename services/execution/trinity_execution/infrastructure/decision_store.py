"""Writes one engine decision in the caller's transaction (invariant 1).

The new state (the execution's row and the rows of the steps the decision changed),
the facts (outbox, through the unit of work, + the execution's fact log), the
outgoing commands (dispatches) and the timers all commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from google.protobuf.message import Message
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution import domain as d
from trinity_execution.application.ports import Written
from trinity_execution.infrastructure import translate
from trinity_execution.infrastructure.children import dispatch_of
from trinity_execution.infrastructure.fact_log import append_facts
from trinity_execution.infrastructure.item_store import save_items
from trinity_execution.infrastructure.message_store import close_subscription, open_subscription
from trinity_execution.infrastructure.repository import ExecutionRow, save_execution, save_steps
from trinity_execution.infrastructure.senders import (
    CANCEL_APPROVAL,
    CANCEL_WORK,
    REQUEST_APPROVAL,
    REQUEST_WORK,
)
from trinity_execution.infrastructure.tables import dispatches, timers
from trinity_platform.subjects import fact_subject
from trinity_platform.telemetry import current_traceparent
from trinity_platform.unit_of_work import EventMessage, NewEvents


def _dispatch_row(command: d.Command, execution_id: str, now: datetime) -> dict[str, object] | None:
    payload: Message
    target: str | None
    local = dispatch_of(command)
    if local is not None:
        kind, key, data, target = local
        return _row(kind, key, data, target, execution_id, now)
    match command:
        case d.RequestWork():
            kind, payload, target = REQUEST_WORK, translate.request_work(command), None
        case d.RequestApproval():
            kind, payload, target = REQUEST_APPROVAL, translate.request_approval(command), None
        case d.CancelWork():
            kind, payload, target = CANCEL_WORK, translate.cancel_work(command), command.key
        case d.CancelApproval():
            kind, payload, target = CANCEL_APPROVAL, translate.cancel_approval(command), command.key
        case _:
            return None
    data = payload.SerializeToString(deterministic=True)
    return _row(kind, payload.request_id, data, target, execution_id, now)


def _row(
    kind: str, key: str, payload: bytes, target: str | None, execution_id: str, now: datetime
) -> dict[str, object]:
    return {
        "key": key,
        "execution_id": execution_id,
        "kind": kind,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "target_key": target,
        "created_at": now,
        "traceparent": current_traceparent(),
    }


async def write_decision(
    conn: AsyncConnection,
    row: ExecutionRow,
    decision: d.Decision,
    now: datetime,
    add_events: Callable[[NewEvents], None],
    *,
    causation_id: str = "",
    new: bool = False,
) -> Written:
    """Write ``decision`` on ``conn``; its facts go to the outbox through ``add_events``
    (the unit of work's: written at its commit, with the platform's message ids)."""
    state = decision.state
    execution_id = state.execution_id
    if new:  # the insert wrote the execution's row: every step is new
        changed: tuple[str, ...] = tuple(state.steps)
    else:
        await save_execution(
            conn,
            execution_id,
            expected_revision=row.revision,
            status=str(state.status),
            state=state.header_dict(),
            now=now,
            ended_at=state.ended_at,
            fact_count=row.fact_count + len(decision.facts),
        )
        changed = decision.changed_steps
    # After the revision moved on (or the row was inserted): the one guard held.
    await save_steps(
        conn, execution_id, state.steps, changed, new=new, dropped=decision.dropped_steps
    )
    await save_items(conn, execution_id, state, changed)
    messages = [translate.fact_to_proto(fact) for fact in decision.facts]
    if messages:
        # The one message-id scheme: (execution, its revision after this decision, position).
        add_events(
            NewEvents(
                kind="execution",
                aggregate_id=execution_id,
                version=row.revision if new else row.revision + 1,
                messages=[
                    EventMessage(
                        message=message,
                        subject=fact_subject("execution", message.DESCRIPTOR.name),
                        correlation_id=execution_id,
                        causation_id=causation_id,
                    )
                    for message in messages
                ],
            )
        )
        await append_facts(
            conn,
            execution_id,
            row.fact_count + 1,
            [(m, f.occur_time) for m, f in zip(messages, decision.facts, strict=True)],
        )
    dispatch_rows = []
    subscriptions = 0
    for command in decision.commands:
        match command:
            case d.StartTimer():
                await conn.execute(
                    insert(timers),
                    {
                        "id": command.timer_id,
                        "execution_id": execution_id,
                        "fire_at": command.fire_at,
                        "purpose": str(command.purpose),
                        "status": "pending",
                        "traceparent": current_traceparent(),
                    },
                )
            case d.CancelTimer():
                await conn.execute(
                    update(timers)
                    .where(timers.c.id == command.timer_id, timers.c.status == "pending")
                    .values(status="cancelled")
                )
            case d.OpenMessageSubscription():
                await open_subscription(conn, command, now)
                subscriptions += 1
            case d.CloseMessageSubscription():
                await close_subscription(conn, command.key)
            case _:
                found = _dispatch_row(command, execution_id, now)
                if found is not None:
                    dispatch_rows.append(found)
    if dispatch_rows:
        await conn.execute(insert(dispatches), dispatch_rows)
    return Written(
        facts=len(messages),
        dispatches=len(dispatch_rows),
        reported=tuple(decision.facts),
        subscriptions=subscriptions,
    )
