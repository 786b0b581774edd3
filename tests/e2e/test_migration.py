"""MigrateExecution through the real suite (issue 16 §2), on SQLite and PostgreSQL.

Executions parked at an approval, at a timer and with work outstanding move to a
version that adds a step after them and changes a later template, and complete there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from sqlalchemy import update

from trinity.process.approval.v1 import approval_pb2
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity_execution.infrastructure.tables import timers
from trinity_platform.config import normalize_database_url
from trinity_platform.db import create_engine
from trinity_platform.grpc_errors import error_details

pytestmark = pytest.mark.e2e

# `gated` finishes only once the file its message names exists: the work stays
# outstanding for as long as the test wants, whatever the machine's speed.
EXECUTOR_CONFIG = """
agents:
  worker:
    backend: script
    file: replies.yaml
  gated:
    backend: command
    command: [sh, -c, 'while [ ! -e "$1" ]; do sleep 0.05; done; echo built', gate, "{message}"]
"""
EXECUTOR_FILES = {"replies.yaml": "replies:\n  - output: 'done: {message}'\n"}
TOKENS = {"reviewer-token": "reviewer@example.com"}

V1 = """
name: migrating
steps:
  - id: route
    gateway:
      type: exclusive
      routes:
        - {target: ask, condition: "{{ input.park == 'approval' }}"}
        - {target: nap, condition: "{{ input.park == 'timer' }}"}
        - {target: build, is_default: true}
  - id: ask
    human_approval: {approvers: [reviewer@example.com], title: "go?"}
    timeout: 1h
  - id: nap
    timer: {duration: 1h}
  - id: build
    agent_task: {agent: gated, message: "{{ input.gate }}"}
  - id: finish
    depends_on: [ask, nap, build]
    agent_task: {agent: worker, message: "v1 finish"}
"""
# v2: `polish` comes after the parked steps; `finish` now follows it with a new template.
V2 = V1.replace(
    """  - id: finish
    depends_on: [ask, nap, build]
    agent_task: {agent: worker, message: "v1 finish"}""",
    """  - id: polish
    depends_on: [ask, nap, build]
    agent_task: {agent: worker, message: "polish {{ input.park }}"}
  - id: finish
    depends_on: [polish]
    agent_task: {agent: worker, message: "v2 finish after {{ steps.polish.output }}"}""",
)
# v3 drops the approval: an execution waiting there cannot move.
V3 = V2.replace("        - {target: ask, condition: \"{{ input.park == 'approval' }}\"}\n", "")
V3 = V3.replace(
    """  - id: ask
    human_approval: {approvers: [reviewer@example.com], title: "go?"}
    timeout: 1h
""",
    "",
).replace("[ask, nap, build]", "[nap, build]")

S = execution_pb2
pb = execution_service_pb2


def by_step(execution: execution_pb2.Execution) -> dict[str, execution_pb2.StepExecution]:
    return {step.step_id: step for step in execution.steps}


async def make_timers_due(client, execution_id: str) -> None:  # type: ignore[no-untyped-def]
    """The hour passes: the execution's pending timers fall due now."""
    suite = client.suite
    url = suite.database_urls.get("execution") or f"sqlite:///{suite.data_dir}/execution.db"
    engine = create_engine(normalize_database_url(url))
    try:
        async with engine.begin() as conn:
            changed = await conn.execute(
                update(timers)
                .where(timers.c.execution_id == execution_id, timers.c.status == "pending")
                .values(fire_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        assert changed.rowcount == 1
    finally:
        await engine.dispose()


async def test_parked_executions_move_to_a_new_version_and_complete_there(  # type: ignore[no-untyped-def]
    api, tmp_path: Path
) -> None:
    client = api
    assert await client.publish(V1) == "1.0"
    gate = tmp_path / "gate"
    at_approval = await client.trigger("migrating", park="approval", gate=str(gate))
    at_timer = await client.trigger("migrating", park="timer", gate=str(gate))
    working = await client.trigger("migrating", park="work", gate=str(gate))
    approval = await client.pending_approval(at_approval)
    await client.wait(at_timer, lambda e: by_step(e)["nap"].status == S.STEP_STATUS_WAITING)
    await client.wait(working, lambda e: by_step(e)["build"].status == S.STEP_STATUS_RUNNING)
    assert await client.publish(V2) == "1.1"
    assert await client.publish(V3) == "1.2"

    # Dry run of the whole version: each can move; nothing moved.
    dry = await client.executions.MigrateExecution(
        pb.MigrateExecutionRequest(
            process_name="migrating", from_version="1.0", to_version="1.1", dry_run=True
        )
    )
    assert dry.dry_run and {o.execution_id for o in dry.outcomes} == {
        at_approval,
        at_timer,
        working,
    }
    assert all(o.can_migrate and not o.migrated for o in dry.outcomes), dry
    assert (await client.get(working)).process_version == "1.0"

    # To v3 the execution at the approval cannot move, and says why.
    refused = await client.executions.MigrateExecution(
        pb.MigrateExecutionRequest(
            request_id=client.key("m3"), execution_id=at_approval, to_version="1.2"
        )
    )
    (outcome,) = refused.outcomes
    assert not outcome.can_migrate and not outcome.migrated
    assert [(p.code, p.step_id) for p in outcome.problems] == [("STEP_HAS_NO_COUNTERPART", "ask")]
    assert (await client.get(at_approval)).process_version == "1.0"

    # One, by id, idempotent by request id; then the rest of the version.
    request = pb.MigrateExecutionRequest(
        request_id=client.key("m2"), execution_id=at_approval, to_version="1.1"
    )
    first = await client.executions.MigrateExecution(request)
    again = await client.executions.MigrateExecution(request)
    assert first == again and first.outcomes[0].migrated
    # every step that has a state maps (the branches not taken were skipped)
    carried = {s: s for s in ("route", "ask", "nap", "build")}
    assert dict(first.outcomes[0].step_mapping) == carried
    rest = await client.executions.MigrateExecution(
        pb.MigrateExecutionRequest(
            request_id=client.key("m2"),
            process_name="migrating",
            from_version="1.0",
            to_version="1.1",
        )
    )
    assert {o.execution_id for o in rest.outcomes if o.migrated} == {at_timer, working}
    for execution_id in (at_approval, at_timer, working):
        moved = await client.get(execution_id)
        assert moved.process_version == "1.1" and moved.status == S.EXECUTION_STATUS_RUNNING

    # What they waited for under v1 completes them under v2.
    await client.decide(approval.id, approval_pb2.DECISION_APPROVE, "reviewer-token")
    await make_timers_due(client, at_timer)
    gate.write_text("open")
    for execution_id, park in ((at_approval, "approval"), (at_timer, "timer"), (working, "work")):
        done = await client.wait(execution_id)
        assert done.status == S.EXECUTION_STATUS_COMPLETED, done
        steps = by_step(done)
        assert steps["polish"].output == f"done: polish {park}"
        assert steps["finish"].output == f"done: v2 finish after done: polish {park}"
        facts = await client.facts(execution_id, (execution_facts.ProcessCompleted,))
        (migrated,) = [f for f in facts if isinstance(f, execution_facts.ExecutionMigrated)]
        assert (migrated.from_version, migrated.execution.process_version) == ("1.0", "1.1")
        assert dict(migrated.step_mapping) == carried
        parked = {"approval": "ask", "timer": "nap", "work": "build"}[park]
        # the parked step finished after the move, under v2
        (completed,) = [
            f for f in facts if isinstance(f, execution_facts.StepCompleted) and f.step_id == parked
        ]
        assert facts.index(migrated) < facts.index(completed)
        assert completed.execution.process_version == "1.1"


async def test_hostile_migration_requests_get_clear_answers(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    cases = [
        (pb.MigrateExecutionRequest(execution_id="x"), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.MigrateExecutionRequest(to_version="1.1"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            pb.MigrateExecutionRequest(execution_id="x", from_version="1.0", to_version="1.1"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.MigrateExecutionRequest(execution_id="nope", to_version="1.1"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            pb.MigrateExecutionRequest(
                process_name="migrating", from_version="1.0", to_version="1.0"
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            pb.MigrateExecutionRequest(
                process_name="migrating",
                from_version="1.0",
                to_version="1.1",
                status=S.EXECUTION_STATUS_COMPLETED,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.MigrateExecutionRequest(execution_id="x" * 300, to_version="1.1"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.MigrateExecutionRequest(
                execution_id="x", to_version="1.1", step_mapping={"a": "b" * 300}
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            pb.MigrateExecutionRequest(execution_id="x", to_version="1.1", step_mapping={"a": ""}),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for request, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.executions.MigrateExecution(request)
        assert refused.value.code() == code, (request, refused.value.details())
    # a mapping naming steps the versions do not have
    await client.publish(V1.replace("name: migrating", "name: mapped"))
    execution_id = await client.trigger("mapped", park="approval", gate="/nonexistent")
    await client.publish(V2.replace("name: migrating", "name: mapped"))
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await client.executions.MigrateExecution(
            pb.MigrateExecutionRequest(
                execution_id=execution_id, to_version="1.1", step_mapping={"ghost": "finish"}
            )
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_details(wrong.value)[1]] == ["step_mapping[ghost]"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.executions.MigrateExecution(
            pb.MigrateExecutionRequest(execution_id=execution_id, to_version="9")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
