"""A batch of facts' request matches are read with their executions, in one statement
(infrastructure/fact_matching.py), against the real database: the answered request
of that very step, one still being sent (ask again), or none (another step's, another
execution's, an unknown id, an unknown execution)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert

from trinity_execution.infrastructure.fact_matching import Claim, Unmatched, load_answered
from trinity_execution.infrastructure.repository import ExecutionRow, insert_execution
from trinity_execution.infrastructure.senders import REQUEST_APPROVAL, REQUEST_WORK
from trinity_execution.infrastructure.tables import dispatches
from trinity_platform.db import create_engine, read_only, run_migrations

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def execution(execution_id: str) -> ExecutionRow:
    return ExecutionRow(
        id=execution_id,
        process_id="def",
        process_name="p",
        process_version="1.0",
        status="running",
        trigger_kind="manual",
        triggered_by="",
        state={"execution_id": execution_id, "active": []},
        revision=3,
        fact_count=2,
        created_at=NOW,
        updated_at=NOW,
        ended_at=None,
    )


def dispatch(key: str, execution_id: str, status: str, result_id: str | None) -> dict[str, Any]:
    return {
        "key": key,
        "execution_id": execution_id,
        "kind": REQUEST_WORK,
        "payload": b"",
        "status": status,
        "attempts": 1,
        "next_attempt_at": NOW,
        "created_at": NOW,
        "result_id": result_id,
    }


def claim(execution_id: str, answer_id: str, step_id: str = "a", **more: Any) -> Claim:
    fields: dict[str, Any] = {"kind": REQUEST_WORK, "iteration": 1, "attempt": 1} | more
    return Claim(execution_id=execution_id, answer_id=answer_id, step_id=step_id, **fields)


async def test_the_executions_and_the_requests_a_batch_of_facts_answers_are_read_at_once(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    async with engine.begin() as conn:
        for execution_id in ("ex", "other"):
            await insert_execution(conn, execution(execution_id), fact_count=2)
        await conn.execute(
            insert(dispatches),
            [
                dispatch("ex/a/1/1", "ex", "done", "w-a"),
                dispatch("ex/b/1/1", "ex", "done", "w-b"),
                dispatch("ex/c/1/1", "ex", "pending", None),
                dispatch("other/a/1/1", "other", "done", "w-other"),
            ],
        )
    statements: list[str] = []
    event.listen(
        engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )

    async def answered(found: Claim) -> tuple[ExecutionRow | None, str | Unmatched]:
        async with read_only(engine) as conn:
            rows, matched = await load_answered(conn, [found])
        return rows[0], matched[0]

    row, matched = await answered(claim("ex", "w-a"))
    assert matched == "ex/a/1/1"
    assert row is not None and (row.id, row.revision, row.fact_count) == ("ex", 3, 2)
    assert len(statements) == 1

    # Another step's answer, another execution's, an attempt it was not for, an unknown id.
    for wrong in (
        claim("ex", "w-b"),
        claim("ex", "w-other"),
        claim("other", "w-a"),
        claim("ex", "w-a", attempt=2),
        claim("ex", "w-unknown", step_id="b"),
        claim("ex", "w-a", kind=REQUEST_APPROVAL),
        claim("missing", "w-a"),
        claim("ex", ""),
    ):
        assert await answered(wrong) == (None, Unmatched.NONE), wrong
    # The request of step c is still being sent: its answer is matched later.
    assert await answered(claim("ex", "w-c", step_id="c")) == (None, Unmatched.NOT_YET)
    # An approval says no attempt: any attempt of its step and iteration matches.
    assert (await answered(claim("ex", "w-a", attempt=None)))[1] == "ex/a/1/1"

    # A batch: every claim matched as alone, in one statement.
    batch = [
        claim("ex", "w-a"),
        claim("ex", "w-b"),
        claim("other", "w-other"),
        claim("ex", "w-c", step_id="c"),
        claim("missing", "w-a"),
        claim("other", "w-a"),
    ]
    statements.clear()
    async with read_only(engine) as conn:
        rows, matches = await load_answered(conn, batch)
    assert len(statements) == 1
    assert matches == [
        "ex/a/1/1",
        Unmatched.NONE,
        "other/a/1/1",
        Unmatched.NOT_YET,
        Unmatched.NONE,
        Unmatched.NONE,
    ]
    assert [row.id if row else None for row in rows] == ["ex", None, "other", None, None, None]
    await engine.dispose()


async def test_an_undo_is_answered_only_by_the_work_its_own_request_got(
    database_url: str,
) -> None:
    """A compensation's work request is keyed <execution>/<step>/compensate/<iteration>/
    <attempt> and its facts name the step '<step>/compensate': a fact moves the undo only
    with the work id that request got; the step's own work id, or the undo's id claimed
    for the step or for another attempt, moves nothing."""
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    async with engine.begin() as conn:
        await insert_execution(conn, execution("ex"), fact_count=2)
        await conn.execute(
            insert(dispatches),
            [
                dispatch("ex/a/1/1", "ex", "done", "w-a"),
                dispatch("ex/a/compensate/1/1", "ex", "done", "w-undo"),
            ],
        )

    async def answered(found: Claim) -> str | Unmatched:
        async with read_only(engine) as conn:
            return (await load_answered(conn, [found]))[1][0]

    assert await answered(claim("ex", "w-undo", step_id="a/compensate")) == "ex/a/compensate/1/1"
    for forged in (
        claim("ex", "w-a", step_id="a/compensate"),
        claim("ex", "w-undo", step_id="a"),
        claim("ex", "w-undo", step_id="a/compensate", attempt=2),
        claim("ex", "w-forged", step_id="a/compensate"),
    ):
        assert await answered(forged) == Unmatched.NONE, forged
    await engine.dispose()
