"""for_each items and results in their own table (infrastructure/item_store.py), against
the real database: a decision is given the items it may send and, only when the step may
complete, the results; a step stored inline before the split is moved apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from execution_rows import first_row
from sqlalchemy import func, insert, select

from trinity_execution import domain as d
from trinity_execution.infrastructure.decision_store import write_decision
from trinity_execution.infrastructure.repository import insert_execution, load_execution
from trinity_execution.infrastructure.tables import execution_steps, for_each_items
from trinity_platform.db import create_engine, read_only, run_migrations
from trinity_platform.unit_of_work import NewEvents
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SPEC = ProcessSpec(
    name="items",
    steps=(
        Step(
            "files",
            AgentTaskConfig(
                "a", "review {{ item }}", for_each="{{ input.files }}", max_concurrency=2
            ),
        ),
    ),
)
PROCESS = d.CompiledProcess.compile("def", "1.0", SPEC)
OUTBOX: list[NewEvents] = []
"""The decisions' facts (the unit of work would write them to the outbox at its commit)."""


async def answer_one(engine: Any, execution_id: str, now: datetime) -> dict[str, Any]:
    """Load the execution as a decision does, answer its lowest outstanding item, write
    the decision; returns the for_each part the decision was given."""
    async with read_only(engine) as conn:
        row = await load_execution(conn, execution_id)
    assert row is not None
    given = dict(row.steps["files"]["for_each"])
    state = row.execution_state()
    each = state.step("files").for_each
    assert each is not None
    index = min(set(each.running) - set(each.backoff))
    attempt = state.step("files").attempt
    decision = d.decide(
        PROCESS,
        state,
        d.WorkCompleted(
            now=now,
            step_id="files",
            iteration=1,
            attempt=attempt,
            output=f'{{"file": {index}}}',
            request=f"{each.request}/item/{index}",
        ),
    )
    assert not decision.ignored, decision.ignored
    async with engine.begin() as conn:
        await write_decision(conn, row, decision, now, OUTBOX.append)
    return given


async def test_a_decision_gets_the_items_it_may_send_and_the_results_only_at_the_end(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    files = [f"f{i}" for i in range(12)]
    start = d.decide(
        PROCESS, None, d.StartExecution(now=NOW, execution_id="ex", input={"files": files})
    )
    row = first_row(start.state, "items", NOW)
    async with engine.begin() as conn:
        await insert_execution(conn, row, fact_count=len(start.facts))
        await write_decision(conn, row, start, NOW, OUTBOX.append, new=True)
        stored = await conn.scalar(select(func.count()).select_from(for_each_items))
    assert stored == 12
    now = NOW
    for ended in range(12):
        now += timedelta(seconds=1)
        given = await answer_one(engine, "ex", now)
        assert len(given["loaded_items"]) <= 2  # the window: max_concurrency ahead
        assert ("loaded_results" in given) == (ended == 11)  # only when it may complete
        assert "items" not in given and "outputs" not in given
    async with read_only(engine) as conn:
        row = await load_execution(conn, "ex")
        results = await conn.scalar(
            select(func.count()).select_from(for_each_items).where(for_each_items.c.ended == 1)
        )
    assert row is not None and results == 12
    step = row.execution_state().step("files")
    assert step.status == "completed"
    assert step.structured == {"items": [{"file": i} for i in range(12)], "failed": 0}


async def test_a_step_stored_inline_before_the_split_moves_apart(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    start = d.decide(
        PROCESS,
        None,
        d.StartExecution(now=NOW, execution_id="old", input={"files": ["a", "b", "c"]}),
    )
    data = start.state.to_dict()
    hot = data["steps"]["files"]["for_each"]
    # As the service stored it before: items and outputs inline, no request of its own.
    data["steps"]["files"]["for_each"] = {"items": ["a", "b", "c"], "next": 2, "running": [0, 1]}
    assert hot["request"] == data["steps"]["files"]["request"]
    row = first_row(start.state, "items", NOW)
    async with engine.begin() as conn:
        await insert_execution(conn, row, fact_count=0)
        await conn.execute(
            insert(execution_steps).values(
                execution_id="old", step_id="files", state=json.dumps(data["steps"]["files"])
            )
        )
    await answer_one(engine, "old", NOW + timedelta(seconds=1))  # item 0; item 2 starts
    given = await answer_one(engine, "old", NOW + timedelta(seconds=2))
    # Now apart: every item started, item 0's result in its row, nothing more to load.
    assert given["total"] == 3 and given["ended"] == 1 and given["loaded_items"] == []
    async with read_only(engine) as conn:
        rows = (await conn.execute(select(for_each_items.c.position, for_each_items.c.ended))).all()
    assert sorted(rows) == [(0, 1), (1, 1), (2, 0)]
    await answer_one(engine, "old", NOW + timedelta(seconds=3))
    async with read_only(engine) as conn:
        row = await load_execution(conn, "old")
    assert row is not None
    step = row.execution_state().step("files")
    assert step.structured == {"items": [{"file": 0}, {"file": 1}, {"file": 2}], "failed": 0}


async def test_a_decision_that_ran_out_of_items_gets_them_all_on_its_load_timer(
    database_url: str,
) -> None:
    """Items whose templates fail run past the window: the decision asks for a full load
    (a for_each_load timer due now); the next decision is given every item and result."""
    spec = ProcessSpec(
        name="items",
        steps=(
            Step(
                "files",
                AgentTaskConfig(
                    "a",
                    "review {{ item.x }}",
                    for_each="{{ input.files }}",
                    max_concurrency=1,
                    tolerated_failures=3,
                ),
            ),
        ),
    )
    process = d.CompiledProcess.compile("def", "1.0", spec)
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    files: list[dict[str, int]] = [{"x": 0}, {}, {}, {}, {"x": 4}]
    start = d.decide(
        process, None, d.StartExecution(now=NOW, execution_id="ex", input={"files": files})
    )
    row = first_row(start.state, "items", NOW)
    async with engine.begin() as conn:
        await insert_execution(conn, row, fact_count=len(start.facts))
        await write_decision(conn, row, start, NOW, OUTBOX.append, new=True)

    async def step(event: d.Event) -> d.Decision:
        async with read_only(engine) as conn:
            row = await load_execution(conn, "ex")
        assert row is not None
        decision = d.decide(process, row.execution_state(), event)
        assert not decision.ignored, decision.ignored
        async with engine.begin() as conn:
            await write_decision(conn, row, decision, event.now, OUTBOX.append)
        return decision

    def done(index: int, at: int) -> d.WorkCompleted:
        return d.WorkCompleted(
            now=NOW + timedelta(seconds=at),
            step_id="files",
            iteration=1,
            attempt=1,
            output=f"{index}",
            request=f"ex/files/1/1/item/{index}",
        )

    first = await step(done(0, 1))  # item 1 fails to render; item 2 is not loaded
    (load,) = [c for c in first.commands if isinstance(c, d.StartTimer)]
    assert load.purpose == "for_each_load"
    loaded = await step(d.TimerFired(now=NOW + timedelta(seconds=2), timer_id=load.timer_id))
    (sent,) = [c for c in loaded.commands if isinstance(c, d.RequestWork)]
    assert sent.key == "ex/files/1/1/item/4" and sent.payload.message == "review 4"  # type: ignore[union-attr]
    last = await step(done(4, 3))
    step_state = last.state.step("files")
    assert step_state.status == "completed"
    assert step_state.structured == {"items": [0, None, None, None, 4], "failed": 3}
