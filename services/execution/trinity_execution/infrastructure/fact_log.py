"""Each execution's facts in its own order: the record WatchExecution streams.

Rows are written in the decision's transaction, next to the outbox rows of the
same facts, numbered from 1 per execution (the execution row's fact_count).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from google.protobuf.message import Message
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.application.ports import LoggedFact
from trinity_execution.infrastructure.tables import execution_facts


async def append_facts(
    conn: AsyncConnection,
    execution_id: str,
    first_sequence: int,
    facts: Sequence[tuple[Message, datetime]],
) -> None:
    if not facts:
        return
    await conn.execute(
        insert(execution_facts),
        [
            {
                "execution_id": execution_id,
                "sequence": first_sequence + index,
                "ce_type": message.DESCRIPTOR.full_name,
                "payload": message.SerializeToString(deterministic=True),
                "occur_time": occur_time,
            }
            for index, (message, occur_time) in enumerate(facts)
        ],
    )


async def facts_after(
    conn: AsyncConnection, execution_id: str, after_sequence: int, limit: int = 500
) -> list[LoggedFact]:
    rows = await conn.execute(
        select(
            execution_facts.c.sequence,
            execution_facts.c.ce_type,
            execution_facts.c.payload,
            execution_facts.c.occur_time,
        )
        .where(
            execution_facts.c.execution_id == execution_id,
            execution_facts.c.sequence > after_sequence,
        )
        .order_by(execution_facts.c.sequence)
        .limit(limit)
    )
    return [LoggedFact(r.sequence, r.ce_type, bytes(r.payload), r.occur_time) for r in rows]
