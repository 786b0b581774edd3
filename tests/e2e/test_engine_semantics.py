"""Engine semantics under hostile templates, failure, rejection, overspend, loops and
archived versions (issue 18), through the running suite on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trinity.process.approval.v1 import approval_pb2
from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity_platform.grpc_errors import error_details
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import money_from_proto, spec_to_proto

pytestmark = pytest.mark.e2e

EXECUTOR_CONFIG = """
agents:
  worker:
    backend: script
    file: replies.yaml
"""

EXECUTOR_FILES = {
    "replies.yaml": """
replies:
  - match: "slow"
    delay: 30s
    output: "slow done"
  - match: "overspend"
    cost: "0.30"
    output: "spent too much"
  - match: "round"
    cost: "0.10"
    output: "round {message}"
  - output: "done: {message}"
"""
}

TOKENS = {"approver-token": "approver@example.com"}

# Renders get a generous operations budget here, so the hostile template below runs until
# the deadline stops it: the longest a render can hold anything up.
RENDER_DEADLINE = 4.0
EXTRA_ENV = {
    "TRINITY_EXPRESSION_MAX_OPERATIONS": "1000000000",
    "TRINITY_EXPRESSION_DEADLINE_SECONDS": str(RENDER_DEADLINE),
}

S = execution_pb2


def by_step(execution: execution_pb2.Execution) -> dict[str, execution_pb2.StepExecution]:
    return {step.step_id: step for step in execution.steps}


def amount(money) -> Decimal:  # type: ignore[no-untyped-def]
    return money_from_proto(money).amount


async def test_a_hostile_template_neither_stalls_the_service_nor_other_executions(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: ticker
steps:
  - id: wait
    timer: {duration: 1s}
  - id: tick
    depends_on: [wait]
    agent_task: {agent: worker, message: "tick"}
"""
    )
    await client.publish(
        """
name: hostile
steps:
  - id: stall
    agent_task:
      agent: worker
      message: "{% for i in range(input.n) %}{% for j in range(input.n) %}{% endfor %}{% endfor %}"
  - id: after
    depends_on: [stall]
    agent_task: {agent: worker, message: "never"}
"""
    )
    ticker = await client.trigger("ticker")
    # The hostile trigger renders its first step until the render deadline stops it.
    hostile = asyncio.ensure_future(client.trigger("hostile", n=100000))
    health = health_pb2_grpc.HealthStub(client._channels["execution"])
    answers: list[float] = []
    while not hostile.done():
        asked = time.monotonic()
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        if not hostile.done():
            answers.append(time.monotonic() - asked)
        await asyncio.sleep(0.1)
    hostile_id = await hostile
    failed = await client.wait(hostile_id)
    assert failed.status == S.EXECUTION_STATUS_FAILED
    error = by_step(failed)["stall"].error
    assert error.code == "EXPRESSION_LIMIT_EXCEEDED", error
    assert dict(error.details) == {
        "step_id": "stall",
        "field": "agent_task.message",
        "limit": "deadline",
    }
    assert by_step(failed)["after"].skip_reason == "upstream_failed"
    # Health kept answering while the render ran (each well within the render's stall).
    assert len(answers) >= 3, answers
    assert max(answers) < RENDER_DEADLINE / 2, answers

    # The other execution's timer was not held up by the render.
    done = await client.wait(ticker)
    assert done.status == S.EXECUTION_STATUS_COMPLETED
    wait = by_step(done)["wait"]
    late = wait.end_time.ToDatetime() - wait.start_time.ToDatetime()
    assert late.total_seconds() < 1 + RENDER_DEADLINE / 2, late


async def test_a_rejection_stops_the_path_and_everything_below_is_skipped(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: gated-deploy
steps:
  - id: review
    human_approval: {approvers: [approver@example.com]}
    timeout: 1h
  - id: deploy
    depends_on: [review]
    agent_task: {agent: worker, message: "deploy"}
  - id: announce
    depends_on: [deploy]
    agent_task: {agent: worker, message: "announce"}
"""
    )
    execution_id = await client.trigger("gated-deploy")
    pending = await client.pending_approval(execution_id)
    await client.decide(pending.id, approval_pb2.DECISION_REJECT, "approver-token", "not now")
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_FAILED
    steps = by_step(done)
    assert steps["review"].error.code == "APPROVAL_REJECTED"
    assert steps["review"].decision == "rejected"
    assert [steps[s].skip_reason for s in ("deploy", "announce")] == ["upstream_failed"] * 2
    assert done.progress.finished == done.progress.total == 3
    # The facts say it too: one StepSkipped each, before the execution's end.
    request = execution_service_pb2.WatchExecutionRequest(execution_id=execution_id)
    kinds = [
        reply.type.rsplit(".", 1)[1] async for reply in client.executions.WatchExecution(request)
    ]
    assert kinds[-3:] == ["StepSkipped", "StepSkipped", "ProcessFailed"]

    # Routing on the decision must be asked for: validation refuses it otherwise.
    spec = spec_to_proto(
        parse_process(
            """
name: routes-on-rejection
steps:
  - id: review
    human_approval: {approvers: [approver@example.com]}
    timeout: 1h
  - id: route
    depends_on: [review]
    gateway:
      routes:
        - {target: fix, condition: "{{ steps.review.decision == 'rejected' }}"}
        - {target: ship, is_default: true}
  - id: fix
    agent_task: {agent: worker, message: "fix"}
  - id: ship
    agent_task: {agent: worker, message: "ship"}
"""
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        draft = await client.definitions.CreateDraft(
            definition_service_pb2.CreateDraftRequest(request_id=client.key("d"), spec=spec)
        )
        await client.definitions.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id=client.key("p"), definition_id=draft.definition.id
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "on_reject: continue" in str(error_details(refused.value))


async def test_cancel_skips_what_can_no_longer_run(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: cancelled-chain
steps:
  - id: slow
    agent_task: {agent: worker, message: "slow"}
  - id: next
    depends_on: [slow]
    agent_task: {agent: worker, message: "next"}
"""
    )
    execution_id = await client.trigger("cancelled-chain")
    await client.wait(execution_id, lambda e: by_step(e)["slow"].status == S.STEP_STATUS_RUNNING)
    await client.executions.CancelExecution(
        execution_service_pb2.CancelExecutionRequest(
            request_id=client.key("cancel"), execution_id=execution_id, reason="enough"
        )
    )
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_CANCELLED
    assert by_step(done)["next"].status == S.STEP_STATUS_SKIPPED
    assert by_step(done)["next"].skip_reason == "execution_cancelled"
    assert done.progress.finished == done.progress.total == 2


async def test_money_spent_past_a_limit_is_counted(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: overspender
budget: {limit: "0.25 USD", on_exceeded: fail}
steps:
  - id: spend
    agent_task: {agent: worker, message: "overspend", max_cost: "0.20 USD"}
"""
    )
    done = await client.wait(await client.trigger("overspender"))
    assert done.status == S.EXECUTION_STATUS_FAILED
    spend = by_step(done)["spend"]
    # The agent went past its own max_cost: the step fails, and the money still counts.
    assert spend.error.code == "BUDGET_EXCEEDED"
    assert amount(spend.cost) == Decimal("0.30")
    assert amount(done.total_cost) == Decimal("0.30") > amount(done.budget)
    request = execution_service_pb2.WatchExecutionRequest(execution_id=done.id)
    kinds = [
        reply.type.rsplit(".", 1)[1] async for reply in client.executions.WatchExecution(request)
    ]
    assert "BudgetExceeded" in kinds


async def test_every_iteration_of_a_looping_step_is_shown(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: three-rounds
steps:
  - id: work
    agent_task: {agent: worker, message: "round {{ steps.work.iteration }}"}
  - id: again
    depends_on: [work]
    gateway:
      routes:
        - {target: work, condition: "{{ steps.work.iteration < 3 }}", max_iterations: 3}
        - {target: finish, is_default: true}
  - id: finish
    agent_task: {agent: worker, message: "finish"}
"""
    )
    done = await client.wait(await client.trigger("three-rounds"))
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done
    work = by_step(done)["work"]
    assert work.iteration == 3 and work.output == "round round 3"
    assert [it.iteration for it in work.iterations] == [1, 2]
    assert [it.output for it in work.iterations] == ["round round 1", "round round 2"]
    assert all(it.status == S.STEP_STATUS_COMPLETED for it in work.iterations)
    assert all(amount(it.cost) == Decimal("0.10") for it in work.iterations)
    assert all(it.HasField("duration") and it.attempt == 1 for it in work.iterations)
    assert work.iterations_omitted == 0
    assert amount(done.total_cost) == Decimal("0.30")


async def test_run_by_name_refuses_when_the_latest_version_is_archived(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    text = """
name: retired
steps:
  - id: only
    agent_task: {agent: worker, message: "{text}"}
"""
    first = await client.publish(text.replace("{text}", "one"))
    second = await client.publish(text.replace("{text}", "two"))
    latest = await client.definitions.GetDefinition(
        definition_service_pb2.GetDefinitionRequest(
            by_name=definition_service_pb2.NameSelector(name="retired", version=second)
        )
    )
    await client.definitions.ArchiveDefinition(
        definition_service_pb2.ArchiveDefinitionRequest(
            request_id=client.key("archive"), definition_id=latest.definition.id
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.trigger("retired")
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "LATEST_VERSION_ARCHIVED" in str(error_details(refused.value))
    assert second in (refused.value.details() or "")
    # Naming the older version runs it.
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=client.key("run"), process_name="retired", version=first
    )
    started = (await client.executions.TriggerProcess(request)).execution
    assert started.process_version == first


async def test_a_trigger_sent_after_a_publish_starts_the_new_version(api) -> None:  # type: ignore[no-untyped-def]
    """Triggers naming no version share the definition service's lookups while others are
    in flight, yet each one sent after a publish returned starts the version published."""
    client = api
    text = """
name: fresh
steps:
  - id: wait
    name: Wait {round}
    timer: {duration: 1h}
"""
    await client.publish(text.replace("{round}", "0"))
    stop = asyncio.Event()

    async def keep_triggering() -> None:
        while not stop.is_set():
            await client.trigger("fresh")

    load = [asyncio.create_task(keep_triggering()) for _ in range(8)]
    try:
        for round in range(1, 6):
            published = await client.publish(text.replace("{round}", str(round)))
            started = await asyncio.gather(
                *(
                    client.executions.TriggerProcess(
                        execution_service_pb2.TriggerProcessRequest(
                            request_id=client.key("fresh"), process_name="fresh"
                        )
                    )
                    for _ in range(3)
                )
            )
            assert [s.execution.process_version for s in started] == [published] * 3
    finally:
        stop.set()
        await asyncio.gather(*load)
