"""The schedule and event triggers of the latest published version of each process."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.infrastructure.tables import triggers

SCHEDULE = "schedule"
EVENT = "event"


@dataclass(frozen=True)
class TriggerRow:
    definition_id: str
    position: int
    process_name: str
    process_version: str
    kind: str
    cron: str = ""
    timezone: str = "UTC"
    subject: str = ""
    input: dict[str, Any] = field(default_factory=dict)
    next_fire_at: datetime | None = None


async def replace_triggers(
    conn: AsyncConnection, process_name: str, rows: list[TriggerRow]
) -> None:
    """A new version was published: its triggers replace those of every older version."""
    await conn.execute(
        update(triggers).where(triggers.c.process_name == process_name).values(active=0)
    )
    for definition_id in {row.definition_id for row in rows}:
        await conn.execute(delete(triggers).where(triggers.c.definition_id == definition_id))
    if rows:
        await conn.execute(
            insert(triggers),
            [
                {
                    "definition_id": row.definition_id,
                    "position": row.position,
                    "process_name": row.process_name,
                    "process_version": row.process_version,
                    "kind": row.kind,
                    "cron": row.cron,
                    "timezone": row.timezone,
                    "subject": row.subject,
                    "input": json.dumps(row.input),
                    "next_fire_at": row.next_fire_at,
                    "active": 1,
                }
                for row in rows
            ],
        )


async def deactivate_definition(conn: AsyncConnection, definition_id: str) -> None:
    await conn.execute(
        update(triggers).where(triggers.c.definition_id == definition_id).values(active=0)
    )


def _row(found: Any) -> TriggerRow:
    return TriggerRow(
        definition_id=found.definition_id,
        position=found.position,
        process_name=found.process_name,
        process_version=found.process_version,
        kind=found.kind,
        cron=found.cron,
        timezone=found.timezone,
        subject=found.subject,
        input=json.loads(found.input),
        next_fire_at=found.next_fire_at,
    )


async def due_schedules(conn: AsyncConnection, now: datetime, limit: int = 100) -> list[TriggerRow]:
    found = await conn.execute(
        select(triggers)
        .where(
            triggers.c.active == 1,
            triggers.c.kind == SCHEDULE,
            triggers.c.next_fire_at <= now,
        )
        .order_by(triggers.c.next_fire_at)
        .limit(limit)
    )
    return [_row(r) for r in found]


async def advance_schedule(conn: AsyncConnection, row: TriggerRow, next_fire_at: datetime) -> bool:
    """Move a schedule to its next fire time, unless another replica already did."""
    result = await conn.execute(
        update(triggers)
        .where(
            triggers.c.definition_id == row.definition_id,
            triggers.c.position == row.position,
            triggers.c.next_fire_at == row.next_fire_at,
        )
        .values(next_fire_at=next_fire_at)
    )
    return result.rowcount == 1


async def active_event_triggers(conn: AsyncConnection) -> list[TriggerRow]:
    found = await conn.execute(
        select(triggers).where(triggers.c.active == 1, triggers.c.kind == EVENT)
    )
    return [_row(r) for r in found]
