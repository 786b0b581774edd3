"""Orchestration scenarios through the real suite (issue 7), on SQLite and PostgreSQL.

One suite per database serves every scenario of this module; each scenario uses its
own process name, so they do not see each other.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity_platform import json_values
from trinity_platform.grpc_errors import error_details
from trinity_process_model.proto_codec import money_from_proto

pytestmark = pytest.mark.e2e

EXECUTOR_CONFIG = """
agents:
  worker:
    backend: script
    file: replies.yaml
tools:
  verify:
    command: [python3, check.py, "{name}"]
    arguments:
      name: {pattern: "^[a-z0-9-]{1,40}$"}
    cwd: .
    timeout: 30s
"""

EXECUTOR_FILES = {
    "check.py": """
import json, sys
name = sys.argv[1]
if name.startswith("bad"):
    sys.exit(f"{name} does not check out")
print(json.dumps({"checked": name}))
""",
    "replies.yaml": """
replies:
  - match: "flaky"
    times: 2
    fail: {code: AGENT_UNAVAILABLE, message: "worker is busy"}
  - match: "broken"
    fail: {code: AGENT_UNAVAILABLE, message: "worker is offline"}
  - match: "one-off"
    times: 1
    fail: {code: TOOL_FAILED, message: "first try fails"}
  - match: "slow"
    delay: 30s
    output: "slow done"
  - match: "pause-me"
    delay: 1500ms
    output: "paused work"
  - match: "costly"
    cost: "0.25"
    output: "spent"
  - match: "research"
    cost: "0.25"
    output: "findings on {message}"
  - match: "open-pr"
    output: '{"number": 42}'
  - match: "plan-files"
    output: '{"files": ["a", "b", "c", "d", "e"]}'
  - match: "each-once c "
    times: 1
    fail: {code: AGENT_UNAVAILABLE, message: "busy once"}
  - match: "each-hold"
    delay: 30s
    output: "too late"
  - match: "each-review"
    cost: "0.10"
    output: '{"reviewed": "{message}"}'

  - output: "done: {message}"
""",
}

TOKENS = {"reviewer-token": "reviewer@example.com", "stranger-token": "mallory@example.com"}

S = execution_pb2


def by_step(execution: execution_pb2.Execution) -> dict[str, execution_pb2.StepExecution]:
    return {step.step_id: step for step in execution.steps}


def cost(money) -> Decimal:  # type: ignore[no-untyped-def]
    return money_from_proto(money).amount


async def test_it3_research_review_loop_with_budget_and_costs(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: it3
budget: {limit: "2.00 USD", on_exceeded: fail}
outputs:
  - {channel: file, target: it3-result.jsonl, message: "result: {{ steps.research.output }}"}
steps:
  - id: research
    agent_task: {agent: worker, message: "research {{ input.topic }}"}
    informed: [auditor]
  - id: review
    depends_on: [research]
    human_approval:
      approvers: [reviewer@example.com]
      on_reject: continue
      title: "Review {{ input.topic }}"
      artifacts: ["{{ steps.research.output }}"]
    timeout: 1h
  - id: decide
    depends_on: [review]
    gateway:
      type: exclusive
      routes:
        - {target: research, condition: "{{ steps.review.decision == 'needs_changes' }}", max_iterations: 3}
        - {target: wait, condition: "{{ steps.review.decision == 'approved' }}"}
  - id: wait
    timer: {duration: 1s}
  - id: publish
    depends_on: [wait]
    notification: {channel: file, target: it3.jsonl, message: "approved: {{ steps.research.output }}"}
"""
    )
    execution_id = await client.trigger("it3", topic="agents")

    first = await client.pending_approval(execution_id)
    assert first.approvers == ["reviewer@example.com"]
    assert "findings on research agents" in first.artifacts[0].text
    # Only a listed approver may decide, and the decider is the authenticated caller.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.decide(first.id, approval_pb2.DECISION_APPROVE, "stranger-token")
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await client.decide(first.id, approval_pb2.DECISION_REQUEST_CHANGES, "reviewer-token", "more")

    second = await client.pending_approval(execution_id)
    assert second.id != first.id and second.iteration == 2
    await client.decide(second.id, approval_pb2.DECISION_APPROVE, "reviewer-token")

    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done
    steps = by_step(done)
    assert steps["research"].iteration == 2
    assert steps["review"].decision == "approved"
    assert steps["publish"].status == S.STEP_STATUS_COMPLETED
    assert cost(done.total_cost) == Decimal("0.50")  # two research rounds at 0.25
    assert cost(done.budget) == Decimal("2.00")
    assert done.progress.finished == done.progress.total == 5
    # The process output and the informed agent's inbox were delivered by the executor.
    notifications = client.suite.data_dir / "notifications"
    for _ in range(100):
        if (notifications / "it3-result.jsonl").exists() and (notifications / "auditor").exists():
            break
        await asyncio.sleep(0.1)
    result_lines = (notifications / "it3-result.jsonl").read_text().splitlines()
    assert any("result: findings on research agents" in line for line in result_lines)
    assert len((notifications / "auditor").read_text().splitlines()) == 2  # one per research round


async def test_watch_streams_the_facts_live_and_from_a_point(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: watched
steps:
  - id: first
    agent_task: {agent: worker, message: "pause-me first"}
  - id: second
    depends_on: [first]
    agent_task: {agent: worker, message: "second"}
"""
    )
    execution_id = await client.trigger("watched")
    request = execution_service_pb2.WatchExecutionRequest(execution_id=execution_id)
    seen = [reply async for reply in client.executions.WatchExecution(request)]
    assert [r.type.rsplit(".", 1)[1] for r in seen] == [
        "ProcessStarted",
        "StepStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "ProcessCompleted",
    ]
    assert [r.sequence for r in seen] == [1, 2, 3, 4, 5, 6]
    completed = execution_facts.ProcessCompleted()
    assert seen[-1].fact.Unpack(completed)
    assert completed.execution.execution_id == execution_id
    request.after_sequence = 4
    resumed = [reply async for reply in client.executions.WatchExecution(request)]
    assert [r.sequence for r in resumed] == [5, 6]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        async for _ in client.executions.WatchExecution(
            execution_service_pb2.WatchExecutionRequest(execution_id="nope")
        ):
            pass
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_parallel_fan_out_fan_in_and_inclusive_gateway(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: fan
steps:
  - id: start
    agent_task: {agent: worker, message: "start"}
  - id: split
    depends_on: [start]
    gateway: {type: parallel, routes: [{target: left}, {target: right}]}
  - id: left
    agent_task: {agent: worker, message: "left"}
  - id: right
    agent_task: {agent: worker, message: "right"}
  - id: join
    depends_on: [left, right]
    agent_task: {agent: worker, message: "join {{ steps.left.output }} + {{ steps.right.output }}"}
  - id: choose
    depends_on: [join]
    gateway:
      type: inclusive
      routes:
        - {target: x, condition: "{{ input.n > 1 }}"}
        - {target: y, condition: "{{ input.n > 5 }}"}
        - {target: z, condition: "{{ input.n > 2 }}"}
  - id: x
    agent_task: {agent: worker, message: "x"}
  - id: y
    agent_task: {agent: worker, message: "y"}
  - id: z
    agent_task: {agent: worker, message: "z"}
  - id: end
    depends_on: [x, y, z]
    agent_task: {agent: worker, message: "end"}
"""
    )
    done = await client.wait(await client.trigger("fan", n=3))
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done
    steps = by_step(done)
    assert steps["join"].output == "done: join done: left + done: right"
    assert steps["y"].status == S.STEP_STATUS_SKIPPED
    assert steps["y"].skip_reason == "route_not_taken"
    assert {steps[s].status for s in ("x", "z", "end")} == {S.STEP_STATUS_COMPLETED}


async def test_a_failing_step_is_retried_until_it_succeeds(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: flaky
steps:
  - id: call
    agent_task: {agent: worker, message: "flaky call"}
    retry: {max_attempts: 3, initial_backoff: 100ms}
"""
    )
    done = await client.wait(await client.trigger("flaky"))
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done
    assert by_step(done)["call"].attempt == 3


async def test_a_step_that_keeps_failing_fails_the_execution(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: broken
steps:
  - id: call
    agent_task: {agent: worker, message: "broken call"}
    retry: {max_attempts: 2, initial_backoff: 100ms}
  - id: after
    depends_on: [call]
    agent_task: {agent: worker, message: "never"}
"""
    )
    done = await client.wait(await client.trigger("broken"))
    assert done.status == S.EXECUTION_STATUS_FAILED
    assert done.error.code == "AGENT_UNAVAILABLE"
    steps = by_step(done)
    assert steps["call"].status == S.STEP_STATUS_FAILED and steps["call"].attempt == 2
    # The step below can no longer run: it ends skipped, and progress reaches its total.
    assert steps["after"].status == S.STEP_STATUS_SKIPPED
    assert steps["after"].skip_reason == "upstream_failed"
    assert done.progress.finished == done.progress.total == 2


async def test_budget_exceeded_stops_new_steps_and_fails(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: spender
budget: {limit: "0.40 USD"}
steps:
  - id: one
    agent_task: {agent: worker, message: "costly one"}
  - id: two
    depends_on: [one]
    agent_task: {agent: worker, message: "costly two"}
  - id: three
    depends_on: [two]
    agent_task: {agent: worker, message: "costly three"}
"""
    )
    done = await client.wait(await client.trigger("spender"))
    assert done.status == S.EXECUTION_STATUS_FAILED
    assert done.error.code == "BUDGET_EXCEEDED"
    # The second task is never cut short to what is left: it spends 0.25 USD, which is
    # counted (money spent is always counted), crosses the budget and fails the
    # execution; the overspend shows, and the third never starts.
    assert cost(done.total_cost) == Decimal("0.50")
    assert cost(done.total_cost) > cost(done.budget)
    assert by_step(done)["two"].status == S.STEP_STATUS_COMPLETED
    assert by_step(done)["three"].status == S.STEP_STATUS_SKIPPED
    assert by_step(done)["three"].skip_reason == "execution_failed"


async def test_cancel_cancels_outstanding_work_and_approval(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: cancellable
steps:
  - id: long
    agent_task: {agent: worker, message: "slow job"}
  - id: ask
    human_approval: {approvers: [reviewer@example.com]}
    timeout: 1h
"""
    )
    execution_id = await client.trigger("cancellable")
    approval = await client.pending_approval(execution_id)
    await client.wait(execution_id, lambda e: by_step(e)["long"].status == S.STEP_STATUS_RUNNING)
    await asyncio.sleep(0.5)  # the executor has taken the slow job
    reply = await client.executions.CancelExecution(
        execution_service_pb2.CancelExecutionRequest(
            request_id=client.key("cancel"), execution_id=execution_id, reason="no longer needed"
        )
    )
    assert reply.execution.status == S.EXECUTION_STATUS_CANCELLED

    async def settled() -> tuple[int, int]:
        listed = await client.work.ListWork(
            work_service_pb2.ListWorkRequest(execution_id=execution_id)
        )
        pending = await client.approvals.GetApproval(
            approval_service_pb2.GetApprovalRequest(approval_id=approval.id)
        )
        return listed.work[0].status, pending.approval.status

    for _ in range(200):
        work_status, approval_status = await settled()
        if (work_status, approval_status) == (
            work_pb2.WORK_STATUS_CANCELLED,
            approval_pb2.APPROVAL_STATUS_CANCELLED,
        ):
            break
        await asyncio.sleep(0.1)
    assert work_status == work_pb2.WORK_STATUS_CANCELLED
    assert approval_status == approval_pb2.APPROVAL_STATUS_CANCELLED
    # A second cancel is refused: the execution has ended.
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await client.executions.CancelExecution(
            execution_service_pb2.CancelExecutionRequest(
                request_id=client.key("cancel"), execution_id=execution_id
            )
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(again.value)[0] == "EXECUTION_FINISHED"


async def test_pause_holds_new_steps_and_resume_continues(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: pausable
steps:
  - id: first
    agent_task: {agent: worker, message: "pause-me"}
  - id: second
    depends_on: [first]
    agent_task: {agent: worker, message: "second"}
"""
    )
    execution_id = await client.trigger("pausable")
    paused = await client.executions.PauseExecution(
        execution_service_pb2.PauseExecutionRequest(
            request_id=client.key("pause"), execution_id=execution_id, reason="look first"
        )
    )
    assert paused.execution.status == S.EXECUTION_STATUS_PAUSED
    held = await client.wait(
        execution_id, lambda e: by_step(e)["first"].status == S.STEP_STATUS_COMPLETED
    )
    await asyncio.sleep(0.5)
    held = await client.get(execution_id)
    assert held.status == S.EXECUTION_STATUS_PAUSED
    assert by_step(held)["second"].status in (S.STEP_STATUS_PENDING, S.STEP_STATUS_READY)
    await client.executions.ResumeExecution(
        execution_service_pb2.ResumeExecutionRequest(
            request_id=client.key("resume"), execution_id=execution_id
        )
    )
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_COMPLETED


async def test_retry_redrives_a_failed_execution_keeping_completed_steps(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: redrive
steps:
  - id: prepare
    agent_task: {agent: worker, message: "prepare"}
  - id: deploy
    depends_on: [prepare]
    agent_task: {agent: worker, message: "one-off deploy"}
"""
    )
    execution_id = await client.trigger("redrive")
    failed = await client.wait(execution_id)
    assert failed.status == S.EXECUTION_STATUS_FAILED
    prepared_at = by_step(failed)["prepare"].end_time
    for step_id, code, reason, says in (
        ("nosuch", grpc.StatusCode.NOT_FOUND, "STEP_NOT_FOUND", "has no step 'nosuch'"),
        ("prepare", grpc.StatusCode.FAILED_PRECONDITION, "STEP_NOT_FAILED", "is completed"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.executions.RetryExecution(
                execution_service_pb2.RetryExecutionRequest(
                    request_id=client.key(f"retry-{step_id}"),
                    execution_id=execution_id,
                    step_id=step_id,
                )
            )
        assert refused.value.code() == code
        assert error_details(refused.value)[0] == reason
        assert says in (refused.value.details() or "")
    await client.executions.RetryExecution(
        execution_service_pb2.RetryExecutionRequest(
            request_id=client.key("retry"), execution_id=execution_id
        )
    )
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done
    assert by_step(done)["prepare"].end_time == prepared_at  # not run again
    assert by_step(done)["deploy"].output == "done: one-off deploy"


async def test_trigger_is_idempotent_by_key_and_refuses_bad_input(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: once
steps:
  - id: only
    agent_task: {agent: worker, message: "only"}
"""
    )
    request = execution_service_pb2.TriggerProcessRequest(
        request_id="same-key", process_name="once"
    )
    first = await client.executions.TriggerProcess(request)
    again = await client.executions.TriggerProcess(request)
    assert first.execution.id == again.execution.id
    listed = await client.executions.ListExecutions(
        execution_service_pb2.ListExecutionsRequest(process_name="once")
    )
    assert [e.id for e in listed.executions] == [first.execution.id]

    cases = [
        (
            execution_service_pb2.TriggerProcessRequest(request_id="same-key", process_name="fan"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "IDEMPOTENCY_KEY_REUSED",
        ),
        (
            execution_service_pb2.TriggerProcessRequest(request_id="x1", process_name=""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        ),
        (
            execution_service_pb2.TriggerProcessRequest(request_id="x2", process_name="nope"),
            grpc.StatusCode.NOT_FOUND,
            "DEFINITION_NOT_FOUND",
        ),
    ]
    for bad, code, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.executions.TriggerProcess(bad)
        assert refused.value.code() == code, bad
        assert error_details(refused.value)[0] == reason
        if reason == "DEFINITION_NOT_FOUND":
            assert refused.value.details() == "no published process named 'nope'"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.get("no-such-execution")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await client.executions.ListExecutions(
            execution_service_pb2.ListExecutionsRequest(page_token="garbage")
        )
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in error_details(token.value)[1]] == ["page_token"]


async def test_declared_inputs_are_checked_before_any_execution_exists(  # type: ignore[no-untyped-def]
    api, module_suite
) -> None:
    client = api
    await client.publish(
        """
name: typed-inputs
inputs:
  topic: {type: string, required: true, description: what to research}
  rounds: {type: integer, default: 2}
  order: {type: object}
triggers:
  - event: {subject: "e2e.typed.orders"}
steps:
  - id: only
    agent_task: {agent: worker, message: "{{ input.topic }} x{{ input.rounds }}"}
"""
    )
    bad = execution_service_pb2.TriggerProcessRequest(
        request_id=client.key("typed"), process_name="typed-inputs"
    )
    bad.input.update({"rounds": "two", "colour": "red"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.executions.TriggerProcess(bad)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = error_details(refused.value)
    assert reason == "INPUT_INVALID"
    assert [(v.field, v.description) for v in violations] == [
        ("input.topic", "is required (a string: what to research)"),
        ("input.rounds", "must be an integer, got the text 'two'"),
        ("input.colour", "is not an input of this process; it declares topic, rounds, order"),
    ]
    listed = await client.executions.ListExecutions(
        execution_service_pb2.ListExecutionsRequest(process_name="typed-inputs")
    )
    assert list(listed.executions) == []  # refused before any execution existed

    # A good input starts; the default fills what the caller left out, as an integer.
    execution = await client.wait(await client.trigger("typed-inputs", topic="agents"))
    assert execution.status == S.EXECUTION_STATUS_COMPLETED
    assert dict(execution.input) == {"topic": "agents", "rounds": 2}
    assert by_step(execution)["only"].output == "done: agents x2"

    # An event's payload is checked too: a good one's extra fields are dropped (the
    # process reads what it declares), a bad one starts nothing.
    import nats

    _suite, nats_server = module_suite
    nc = await nats.connect(nats_server.url)

    async def started_by_event() -> list[execution_pb2.Execution]:
        reply = await client.executions.ListExecutions(
            execution_service_pb2.ListExecutionsRequest(process_name="typed-inputs")
        )
        return [e for e in reply.executions if e.trigger_kind == S.TRIGGER_KIND_EVENT]

    async def send(payload: bytes, message_id: str) -> None:
        await nc.publish("e2e.typed.orders", payload, headers={"Nats-Msg-Id": message_id})
        await nc.flush()

    try:
        # Published until the event subscription is live; one message id, one execution.
        deadline = asyncio.get_running_loop().time() + 30
        while not await started_by_event():
            assert asyncio.get_running_loop().time() < deadline, "the event started nothing"
            await send(b'{"topic": "event", "pull_request": 7}', "good-1")
            await asyncio.sleep(0.3)
        await send(b'{"rounds": 1}', "bad")  # no topic: refused
        await send(b'{"topic": "barrier"}', "good-2")  # handled after the bad one
        deadline = asyncio.get_running_loop().time() + 30
        while len(events := await started_by_event()) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the barrier started nothing"
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    inputs = sorted([dict((await client.wait(e.id)).input) for e in events], key=str)
    assert inputs == [{"topic": "barrier", "rounds": 2}, {"topic": "event", "rounds": 2}]


WAITS_FOR_CI = """
name: waits-for-ci
steps:
  - id: open_pr
    agent_task: {agent: worker, message: "open-pr for {{ input.branch }}"}
  - id: ci
    depends_on: [open_pr]
    wait_for_message:
      message: ci-result
      correlation_key: "{{ steps.open_pr.output.number }}"
      subject: e2e.ci.results
      key_field: pull_request
    timeout: 1h
  - id: merge
    depends_on: [ci]
    agent_task: {agent: worker, message: "merge on {{ steps.ci.output.status }}"}
"""


async def test_a_step_waits_for_a_message_by_signal_or_nats(  # type: ignore[no-untyped-def]
    api, module_suite
) -> None:
    client = api
    await client.publish(WAITS_FOR_CI)

    def signal(key: str, **payload: object) -> execution_service_pb2.SignalExecutionRequest:
        request = execution_service_pb2.SignalExecutionRequest(
            request_id=key, message_name="ci-result", correlation_key="42"
        )
        request.payload.update(payload)
        return request

    # Nobody waits and the sender will not wait either: refused, not lost silently.
    refused_request = signal(client.key("none"), status="green")
    refused_request.time_to_live.FromSeconds(0)
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await client.executions.SignalExecution(refused_request)
    assert nobody.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_details(nobody.value)[0] == "NO_MESSAGE_SUBSCRIBER"
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await client.executions.SignalExecution(
            execution_service_pb2.SignalExecutionRequest(message_name="bad name!")
        )
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in error_details(malformed.value)[1]} == {
        "request_id",
        "message_name",
        "correlation_key",
    }

    # 1. A message sent before its step waits is kept, then delivered when it waits.
    early = signal(client.key("early"), status="green", pull_request=42)
    kept = await client.executions.SignalExecution(early)
    assert not kept.delivered and kept.HasField("expire_time")
    first = await client.trigger("waits-for-ci", branch="fix-1")
    done = await client.wait(first)
    assert done.status == S.EXECUTION_STATUS_COMPLETED
    steps = by_step(done)
    assert dict(steps["ci"].structured_output) == {"status": "green", "pull_request": 42}
    assert steps["merge"].output == "done: merge on green"
    again = await client.executions.SignalExecution(early)  # idempotent by request id
    assert again == kept

    # 2. Delivered at once to the step that waits, by SignalExecution.
    second = await client.trigger("waits-for-ci", branch="fix-2")
    waiting = await client.wait(second, lambda e: by_step(e)["ci"].status == S.STEP_STATUS_WAITING)
    awaited = by_step(waiting)["ci"].awaited_message
    assert (awaited.message_name, awaited.correlation_key) == ("ci-result", "42")
    now = signal(client.key("now"), status="red")
    delivered = await client.executions.SignalExecution(now)
    assert (delivered.delivered, delivered.execution_id, delivered.step_id) == (True, second, "ci")
    assert await client.executions.SignalExecution(now) == delivered  # once, whatever retries
    done = await client.wait(second)
    assert by_step(done)["merge"].output == "done: merge on red"

    # 3. A JSON message on the step's NATS subject, its key in the named field.
    import nats

    third = await client.trigger("waits-for-ci", branch="fix-3")
    await client.wait(third, lambda e: by_step(e)["ci"].status == S.STEP_STATUS_WAITING)
    _suite, nats_server = module_suite
    nc = await nats.connect(nats_server.url)
    message_id = client.key("nats")
    try:
        # Core NATS: published until the engine's subscription is live; one id, one delivery.
        deadline = asyncio.get_running_loop().time() + 30
        while by_step(await client.get(third))["ci"].status == S.STEP_STATUS_WAITING:
            assert asyncio.get_running_loop().time() < deadline, "the message never arrived"
            await nc.publish(
                "e2e.ci.results",
                b'{"pull_request": 42, "status": "yellow"}',
                headers={"Nats-Msg-Id": message_id},
            )
            await nc.flush()
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
    done = await client.wait(third)
    assert done.status == S.EXECUTION_STATUS_COMPLETED
    assert by_step(done)["merge"].output == "done: merge on yellow"


REVIEW_CHILD = """
name: review-child
inputs:
  pr: {type: integer, required: true}
steps:
  - id: look
    agent_task: {agent: worker, message: "look at {{ input.pr }}"}
  - id: verdict
    depends_on: [look]
    agent_task: {agent: worker, message: "costly verdict on {{ input.pr }}"}
"""

CALLS_REVIEW = """
name: calls-review
steps:
  - id: open_pr
    agent_task: {agent: worker, message: "open-pr"}
  - id: review
    depends_on: [open_pr]
    sub_process:
      process: review-child
      input: {pr: "{{ steps.open_pr.output.number }}"}
  - id: merge
    depends_on: [review]
    agent_task: {agent: worker, message: "merge after {{ steps.review.output }}"}
"""

CALLS_BROKEN = """
name: calls-broken
steps:
  - id: call
    sub_process: {process: broken-child}
    retry: {max_attempts: 2, initial_backoff: 100ms}
"""

BROKEN_CHILD = """
name: broken-child
steps:
  - id: fail
    agent_task: {agent: worker, message: "broken"}
"""

CALLS_SLOW = """
name: calls-slow
steps:
  - id: call
    sub_process: {process: slow-child}
"""

SLOW_CHILD = """
name: slow-child
steps:
  - id: wait
    agent_task: {agent: worker, message: "slow child"}
"""

PING = """
name: ping
steps:
  - id: call
    sub_process: {process: pong}
"""

PONG = """
name: pong
steps:
  - id: call
    sub_process: {process: ping}
"""


async def test_a_sub_process_step_runs_a_child_execution(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    for text in (REVIEW_CHILD, CALLS_REVIEW, BROKEN_CHILD, CALLS_BROKEN, SLOW_CHILD, CALLS_SLOW):
        await client.publish(text)

    async def get(execution_id: str) -> execution_pb2.Execution:
        reply = await client.executions.GetExecution(
            execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
        )
        return reply.execution

    # 1. The child runs with the rendered input (typed as it declares), its last step's
    # output becomes the step's output, its cost counts in the parent's total.
    parent_id = await client.trigger("calls-review")
    done = await client.wait(parent_id)
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done.error
    review = by_step(done)["review"]
    assert review.kind == S.STEP_KIND_SUB_PROCESS
    assert review.output == "spent" and cost(review.cost) == Decimal("0.25")
    assert by_step(done)["merge"].output == "done: merge after spent"
    assert cost(done.total_cost) == Decimal("0.25")
    child = await get(review.child_execution_id)
    assert (child.parent_execution_id, child.parent_step_id, child.depth) == (
        parent_id,
        "review",
        1,
    )
    assert dict(child.input) == {"pr": 42} and child.triggered_by == done.triggered_by
    request = execution_service_pb2.WatchExecutionRequest(execution_id=child.id)
    first = [reply async for reply in client.executions.WatchExecution(request)][0]  # noqa: RUF015
    started = execution_facts.ProcessStarted()
    assert first.fact.Unpack(started)
    assert (started.parent_execution_id, started.parent_step_id) == (parent_id, "review")

    # 2. A failing child fails the step; the retry policy starts a new child.
    failing_id = await client.trigger("calls-broken")
    failed = await client.wait(failing_id)
    assert failed.status == S.EXECUTION_STATUS_FAILED
    assert failed.error.code == "CHILD_EXECUTION_FAILED"
    call = by_step(failed)["call"]
    assert call.attempt == 2 and call.child_execution_id
    assert (await get(call.child_execution_id)).status == S.EXECUTION_STATUS_FAILED

    # 3. Cancelling the parent cancels the child.
    slow_id = await client.trigger("calls-slow")
    waiting = await client.wait(
        slow_id, lambda e: by_step(e)["call"].status == S.STEP_STATUS_WAITING
    )
    child_id = by_step(waiting)["call"].child_execution_id
    for _ in range(400):  # the dispatcher starts the child right after the parent's decision
        try:
            if (await get(child_id)).current_step_ids:
                break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND
        await asyncio.sleep(0.05)
    await client.executions.CancelExecution(
        execution_service_pb2.CancelExecutionRequest(
            request_id=client.key("cancel"), execution_id=slow_id, reason="stop"
        )
    )
    cancelled = await client.wait(child_id)
    assert cancelled.status == S.EXECUTION_STATUS_CANCELLED
    assert cancelled.cancelled_by == f"execution:{slow_id}"


async def test_sub_processes_stop_at_the_depth_limit(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(PING)
    await client.publish(PONG)
    top = await client.trigger("ping")
    failed = await client.wait(top)
    assert failed.status == S.EXECUTION_STATUS_FAILED
    depth = 0
    execution = failed
    while by_step(execution)["call"].error.code == "CHILD_EXECUTION_FAILED":
        depth += 1
        execution = await client.wait(by_step(execution)["call"].child_execution_id)
    assert depth == 5  # the default limit: children at depth 1..5, none at 6
    assert execution.depth == 5
    assert by_step(execution)["call"].error.code == "EXECUTION_DEPTH_EXCEEDED"


PER_FILE = """
name: per-file
inputs:
  file: {type: string, required: true}
steps:
  - id: handle
    agent_task: {agent: worker, message: "costly {{ input.file }}"}
  - id: name
    depends_on: [handle]
    agent_task: {agent: worker, message: "handled {{ input.file }}"}
"""

FANS_OUT = """
name: fans-out
budget: {limit: "10.00 USD"}
steps:
  - id: plan
    agent_task: {agent: worker, message: "plan-files"}
  - id: files
    depends_on: [plan]
    sub_process:
      process: per-file
      input: {file: "{{ item }}"}
      for_each: "{{ steps.plan.output.files }}"
      max_concurrency: 2
  - id: report
    depends_on: [files]
    agent_task: {agent: worker, message: "report {{ steps.files.output['items'] | join(',') }}"}
"""


async def test_for_each_runs_one_child_per_item(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(PER_FILE)
    await client.publish(FANS_OUT)
    parent_id = await client.trigger("fans-out")
    done = await client.wait(parent_id)
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done.error
    files = by_step(done)["files"]
    names = [f"done: handled {f}" for f in "abcde"]
    assert json_values.struct_to_dict(files.structured_output) == {"items": names, "failed": 0}
    assert (files.items_total, files.items_done, files.items_failed) == (5, 5, 0)
    assert cost(files.cost) == cost(done.total_cost) == Decimal("1.25")  # 5 x 0.25
    assert by_step(done)["report"].output == "done: report " + ",".join(names)
    listed = await client.executions.ListExecutions(
        execution_service_pb2.ListExecutionsRequest(process_name="per-file", page_size=50)
    )
    children = [e for e in listed.executions if e.parent_execution_id == parent_id]
    assert len(children) == 5 and {e.parent_step_id for e in children} == {"files"}


EACH_BODY = """
name: each-body
budget: {limit: "10.00 USD"}
steps:
  - id: plan
    agent_task: {agent: worker, message: "plan-files"}
  - id: reviews
    depends_on: [plan]
    agent_task:
      agent: worker
      message: "each-once {{ item }} each-review {{ item }} at {{ item_index }}"
      for_each: "{{ steps.plan.output.files }}"
      max_concurrency: 2
    retry: {max_attempts: 2, initial_backoff: 100ms}
  - id: checks
    depends_on: [plan]
    tool_run:
      action: verify
      arguments: {name: "{{ item }}"}
      for_each: "{{ steps.plan.output.files + ['bad-one'] }}"
      tolerated_failures: 1
  - id: report
    depends_on: [reviews, checks]
    agent_task: {agent: worker, message: "report {{ steps.checks.output['failed'] }} failed"}
"""


async def test_for_each_runs_one_agent_task_or_tool_run_per_item(api) -> None:  # type: ignore[no-untyped-def]
    """One work request per item; item c's first attempt fails and is retried alone;
    the tool run's bad item is a tolerated failure; outputs in item order; each review's
    cost counts."""
    client = api
    await client.publish(EACH_BODY)
    execution_id = await client.trigger("each-body")
    done = await client.wait(execution_id)
    assert done.status == S.EXECUTION_STATUS_COMPLETED, done.error
    reviews, checks = by_step(done)["reviews"], by_step(done)["checks"]
    assert json_values.struct_to_dict(reviews.structured_output) == {
        "items": [
            {"reviewed": f"each-once {f} each-review {f} at {i}"} for i, f in enumerate("abcde")
        ],
        "failed": 0,
    }
    assert (reviews.items_total, reviews.items_done, reviews.items_failed) == (5, 5, 0)
    assert reviews.attempt == 1  # the retry was item c's own
    assert cost(reviews.cost) == cost(done.total_cost) == Decimal("0.50")  # 5 x 0.10
    assert json_values.struct_to_dict(checks.structured_output) == {
        "items": [{"checked": f} for f in "abcde"] + [None],
        "failed": 1,
    }
    assert (checks.items_total, checks.items_done, checks.items_failed) == (6, 6, 1)
    assert by_step(done)["report"].output == "done: report 1 failed"
    listed = await client.work.ListWork(
        work_service_pb2.ListWorkRequest(execution_id=execution_id, page_size=50)
    )
    review_work = [w for w in listed.work if w.correlation.step_id == "reviews"]
    assert len(review_work) == 6  # five items, item c twice
    failed = [w for w in review_work if w.status == work_pb2.WORK_STATUS_FAILED]
    assert len(failed) == 1 and "each-once c " in failed[0].payload.agent_task.message
    assert len([w for w in listed.work if w.correlation.step_id == "checks"]) == 6


async def test_cancel_stops_the_outstanding_for_each_items_work(api) -> None:  # type: ignore[no-untyped-def]
    client = api
    await client.publish(
        """
name: each-cancel
steps:
  - id: many
    agent_task:
      agent: worker
      message: "each-hold {{ item }}"
      for_each: "{{ [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }}"
      max_concurrency: 3
"""
    )
    execution_id = await client.trigger("each-cancel")

    async def work() -> list[work_pb2.Work]:
        listed = await client.work.ListWork(
            work_service_pb2.ListWorkRequest(execution_id=execution_id, page_size=50)
        )
        return list(listed.work)

    for _ in range(300):
        if len(await work()) == 3:
            break
        await asyncio.sleep(0.1)
    assert len(await work()) == 3
    await client.executions.CancelExecution(
        execution_service_pb2.CancelExecutionRequest(
            request_id=client.key("cancel"), execution_id=execution_id, reason="enough"
        )
    )
    for _ in range(300):
        statuses = {w.status for w in await work()}
        if statuses == {work_pb2.WORK_STATUS_CANCELLED}:
            break
        await asyncio.sleep(0.1)
    assert statuses == {work_pb2.WORK_STATUS_CANCELLED}
    assert len(await work()) == 3  # no item started after the cancel
    done = await client.get(execution_id)
    assert done.status == S.EXECUTION_STATUS_CANCELLED
    many = by_step(done)["many"]
    assert (many.items_total, many.items_done) == (10, 0)
