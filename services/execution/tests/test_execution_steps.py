"""Each step's state in its own row (execution_steps), against the real database: a
decision rewrites only the steps it changed, a migration to another version drops the
rows of steps left behind, and migration 0008 moves existing executions' steps out of
their JSON state and back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from execution_rows import first_row
from sqlalchemy import event, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_execution import domain as d
from trinity_execution.application.ports import ExecutionRow, ListFilter
from trinity_execution.infrastructure.decision_store import write_decision
from trinity_execution.infrastructure.repository import (
    insert_execution,
    list_page,
    load_execution,
)
from trinity_execution.infrastructure.tables import execution_steps, executions
from trinity_platform.db import create_engine, read_only, run_migrations
from trinity_platform.unit_of_work import NewEvents
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def chain(*ids: str, version: str = "1") -> d.CompiledProcess:
    steps = tuple(
        Step(sid, AgentTaskConfig("a", f"do {sid}"), depends_on=(ids[i - 1],) if i else ())
        for i, sid in enumerate(ids)
    )
    return d.CompiledProcess.compile(f"def-{version}", version, ProcessSpec(name="p", steps=steps))


PROCESS = chain("a", "b", "c")


async def stored_steps(engine: AsyncEngine, execution_id: str) -> dict[str, dict[str, Any]]:
    async with read_only(engine) as conn:
        rows = await conn.execute(
            select(execution_steps.c.step_id, execution_steps.c.state).where(
                execution_steps.c.execution_id == execution_id
            )
        )
        return {step_id: json.loads(state) for step_id, state in rows}


async def decide_and_write(
    engine: AsyncEngine, process: d.CompiledProcess, execution_id: str, event_: d.Event
) -> tuple[d.Decision, list[set[str]]]:
    """Load the execution, decide, write; returns the decision and the step ids of each
    statement that wrote step rows."""
    async with read_only(engine) as conn:
        row = await load_execution(conn, execution_id)
    assert row is not None
    decision = d.decide(process, row.execution_state(), event_)
    assert not decision.ignored, decision.ignored
    written: list[set[str]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "execution_steps" in statement and not statement.lstrip().startswith("SELECT"):
            many = params if isinstance(params, list) else [params]
            written.append({str(p[1] if isinstance(p, tuple) else p) for p in many})

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with engine.begin() as conn:
            await write_decision(conn, row, decision, NOW, OUTBOX.append)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", seen)
    return decision, written


OUTBOX: list[NewEvents] = []
"""The decisions' facts (the unit of work would write them to the outbox at its commit)."""


async def start(engine: AsyncEngine, process: d.CompiledProcess, execution_id: str) -> None:
    started = d.decide(process, None, d.StartExecution(now=NOW, execution_id=execution_id))
    row = first_row(started.state, "p", NOW)
    async with engine.begin() as conn:
        await insert_execution(conn, row, fact_count=len(started.facts))
        await write_decision(conn, row, started, NOW, OUTBOX.append, new=True)


def completed(step_id: str) -> d.WorkCompleted:
    return d.WorkCompleted(
        now=NOW + timedelta(seconds=1),
        step_id=step_id,
        iteration=1,
        attempt=1,
        output=f"{step_id} done",
        request=f"ex/{step_id}/1/1",
    )


async def test_a_decision_rewrites_only_the_steps_it_changed(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    await start(engine, PROCESS, "ex")
    assert set(await stored_steps(engine, "ex")) == {"a"}
    async with read_only(engine) as conn:
        header = await conn.scalar(select(executions.c.state).where(executions.c.id == "ex"))
    assert "steps" not in json.loads(header)

    decision, written = await decide_and_write(engine, PROCESS, "ex", completed("a"))
    assert decision.changed_steps == ("a", "b")
    assert len(written) == 1  # one statement for both rows
    stored = await stored_steps(engine, "ex")
    assert stored == {sid: st.to_dict() for sid, st in decision.state.steps.items()}

    decision, written = await decide_and_write(engine, PROCESS, "ex", completed("b"))
    assert decision.changed_steps == ("b", "c")
    stored = await stored_steps(engine, "ex")
    assert stored["a"]["output"] == "a done" and stored["c"]["status"] == "running"

    async with read_only(engine) as conn:
        row = await load_execution(conn, "ex")
        listed = await list_page(conn, ListFilter(process_name="p"), None, 10)
    assert row is not None and [r.id for r in listed] == ["ex"]
    assert row.execution_state().to_dict() == decision.state.to_dict()
    assert listed[0].execution_state().to_dict() == decision.state.to_dict()
    assert row.revision == 3
    await engine.dispose()


async def test_a_migration_drops_the_rows_of_steps_left_behind(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    await start(engine, PROCESS, "ex")
    await decide_and_write(engine, PROCESS, "ex", completed("a"))
    # Version 2 names "a" "first": it moves, and "a"'s row goes.
    target = chain("first", "b", "c", version="2")
    mapping = d.step_mapping(PROCESS, target, {"a": "first"})
    decision, _ = await decide_and_write(
        engine, PROCESS, "ex", d.MigrateExecution(now=NOW, target=target, mapping=mapping)
    )
    assert decision.dropped_steps == ("a",)
    stored = await stored_steps(engine, "ex")
    assert set(stored) == {"first", "b"} and stored["first"]["output"] == "a done"
    await engine.dispose()


# ------------------------------------------------------------------ migration 0008


async def alembic(engine: AsyncEngine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))

    def run(sync_conn: Any) -> None:
        config.attributes["connection"] = sync_conn
        (command.downgrade if down else command.upgrade)(config, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def whole_row(state: d.ExecutionState, index: int) -> dict[str, Any]:
    """An executions row as 0007 stored it: the whole state, steps included."""
    row: ExecutionRow = first_row(state, "p", NOW + timedelta(seconds=index))
    return {
        "id": row.id,
        "process_id": row.process_id,
        "process_name": row.process_name,
        "process_version": row.process_version,
        "status": row.status,
        "trigger_kind": row.trigger_kind,
        "triggered_by": row.triggered_by,
        "state": json.dumps(state.to_dict(), separators=(",", ":")),
        "revision": 1,
        "fact_count": 0,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "ended_at": None,
    }


async def test_migration_0008_moves_the_steps_out_of_the_state_and_back(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    await alembic(engine, "0007")
    states = []
    for index in range(3):
        state = d.decide(PROCESS, None, d.StartExecution(now=NOW, execution_id=f"ex{index}")).state
        for step_id in ("a", "b")[:index]:
            state = d.decide(PROCESS, state, completed(step_id)).state
        states.append(state)
    whole = [whole_row(state, index) for index, state in enumerate(states)]
    async with engine.begin() as conn:
        await conn.execute(insert(executions), whole)

    await alembic(engine, "head")
    for state in states:
        stored = await stored_steps(engine, state.execution_id)
        assert stored == {sid: st.to_dict() for sid, st in state.steps.items()}
        async with read_only(engine) as conn:
            row = await load_execution(conn, state.execution_id)
        assert row is not None and "steps" not in row.state
        assert row.execution_state().to_dict() == state.to_dict()

    await alembic(engine, "0007", down=True)
    async with read_only(engine) as conn:
        back = dict((await conn.execute(select(executions.c.id, executions.c.state))).all())
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "execution_steps" not in tables
    assert {i: json.loads(s) for i, s in back.items()} == {
        state.execution_id: state.to_dict() for state in states
    }
    await engine.dispose()
