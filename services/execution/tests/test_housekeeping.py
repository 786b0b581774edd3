"""Records of long-ended executions are pruned; running ones and the history rows stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from trinity_execution.infrastructure.tables import (
    dispatches,
    execution_facts,
    executions,
    for_each_items,
    timers,
)
from trinity_execution.infrastructure.transactions import execution_unit_of_work
from trinity_execution.loops.housekeeping import prune_ended
from trinity_platform.db import create_engine, run_migrations

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def execution(execution_id: str, ended_at: datetime | None) -> dict[str, object]:
    return {
        "id": execution_id,
        "process_id": "def",
        "process_name": "p",
        "process_version": "1.0",
        "status": "completed" if ended_at else "running",
        "trigger_kind": "manual",
        "triggered_by": "",
        "state": "{}",
        "revision": 1,
        "fact_count": 1,
        "created_at": NOW - timedelta(days=30),
        "updated_at": NOW - timedelta(days=30),
        "ended_at": ended_at,
    }


async def test_only_long_ended_executions_lose_their_working_records(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    old, recent, running = "old", "recent", "running"
    async with engine.begin() as conn:
        await conn.execute(
            insert(executions),
            [
                execution(old, NOW - timedelta(days=8)),
                execution(recent, NOW - timedelta(days=1)),
                execution(running, None),
            ],
        )
        for execution_id in (old, recent, running):
            await conn.execute(
                insert(execution_facts).values(
                    execution_id=execution_id,
                    sequence=1,
                    ce_type="t",
                    payload=b"",
                    occur_time=NOW,
                )
            )
            await conn.execute(
                insert(for_each_items).values(
                    execution_id=execution_id, request=f"{execution_id}/s/1/1", position=0, item="1"
                )
            )
            for status in ("done", "pending"):
                await conn.execute(
                    insert(dispatches).values(
                        key=f"{execution_id}/{status}",
                        execution_id=execution_id,
                        kind="request_work",
                        payload=b"",
                        status=status,
                        attempts=0,
                        next_attempt_at=NOW,
                        created_at=NOW,
                    )
                )
                await conn.execute(
                    insert(timers).values(
                        id=f"{execution_id}/{status}",
                        execution_id=execution_id,
                        fire_at=NOW,
                        purpose="step_timer",
                        status="fired" if status == "done" else "pending",
                    )
                )

    removed = await prune_ended(execution_unit_of_work(engine), timedelta(days=7), now=NOW)

    assert removed == 4  # the old execution's fact, done dispatch, fired timer, for_each item
    async with engine.connect() as conn:
        facts = (await conn.execute(select(execution_facts.c.execution_id))).scalars().all()
        kept_dispatches = (await conn.execute(select(dispatches.c.key))).scalars().all()
        history = await conn.scalar(select(func.count()).select_from(executions))
        items = (await conn.execute(select(for_each_items.c.execution_id))).scalars().all()
    assert sorted(items) == [recent, running]
    assert sorted(facts) == [recent, running]
    assert f"{old}/done" not in kept_dispatches and f"{old}/pending" in kept_dispatches
    assert history == 3  # the process history itself is kept
    await engine.dispose()
