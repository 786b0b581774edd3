"""Translators between the engine's domain types and the protobuf contracts.

Proto types never enter the domain: facts and commands leave it here, and the
work and approval services' facts enter it here as engine events.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.approval.v1 import facts_pb2 as approval_facts
from trinity.process.common.v1 import types_pb2
from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1 import facts_pb2 as pb
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity_execution import domain as d
from trinity_execution.infrastructure.compensation_translate import (
    compensation_fact,
    compensation_view,
    failure,
)
from trinity_platform import json_values
from trinity_platform.enum_maps import enum_map
from trinity_process_model.model import Money, StepKind, WaitForMessageConfig
from trinity_process_model.proto_codec import (
    ACTION_KINDS,
    BUDGET_ACTIONS,
    CHANNELS,
    GATEWAY_TYPES,
    TIMEOUT_ACTIONS,
    money_from_proto,
    money_to_proto,
)

# ----------------------------------------------------------------- scalars


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def duration(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    result = duration_pb2.Duration()
    result.FromTimedelta(value)
    return result


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    result = struct_pb2.Struct()
    result.update(value)
    return result


def struct_to_dict(value: struct_pb2.Struct) -> dict[str, Any]:
    """Integral numbers as integers (see ``trinity_platform.json_values``)."""
    return json_values.struct_to_dict(value)


STEP_KINDS = enum_map(StepKind, execution_pb2.StepKind, "STEP_KIND_")
TRIGGER_KINDS = enum_map(d.TriggerKind, execution_pb2.TriggerKind, "TRIGGER_KIND_")
EXECUTION_STATUSES = enum_map(d.ExecutionStatus, execution_pb2.ExecutionStatus, "EXECUTION_STATUS_")
EXECUTION_STATUS_NAMES = {proto: str(status) for status, proto in EXECUTION_STATUSES.items()}
STEP_STATUSES = enum_map(d.StepStatus, execution_pb2.StepStatus, "STEP_STATUS_")
DECISIONS = {
    approval_pb2.DECISION_APPROVE: "approved",
    approval_pb2.DECISION_REJECT: "rejected",
    approval_pb2.DECISION_REQUEST_CHANGES: "needs_changes",
}

# ----------------------------------------------------------------- facts out


def _ref(ref: d.ExecutionRef) -> execution_pb2.ExecutionRef:
    return execution_pb2.ExecutionRef(
        execution_id=ref.execution_id,
        process_id=ref.process_id,
        process_name=ref.process_name,
        process_version=ref.process_version,
    )


def _money(value: Any) -> types_pb2.Money | None:
    return None if value is None else money_to_proto(value)


def fact_to_proto(fact: d.Fact) -> Message:
    """The protobuf message of a domain fact (same name, field for field)."""
    common: dict[str, Any] = {
        "execution": _ref(fact.execution),
        "occur_time": timestamp(fact.occur_time),
    }
    match fact:
        case d.ProcessStarted():
            return pb.ProcessStarted(
                **common,
                triggered_by=fact.triggered_by,
                trigger_kind=TRIGGER_KINDS[fact.trigger_kind],
                input=struct(fact.input),
                parent_execution_id=fact.parent_execution_id,
                parent_step_id=fact.parent_step_id,
            )
        case d.ProcessCompleted():
            return pb.ProcessCompleted(
                **common,
                total_cost=_money(fact.total_cost),
                total_duration=duration(fact.total_duration),
            )
        case d.ProcessFailed():
            return pb.ProcessFailed(
                **common,
                failed_step_id=fact.failed_step_id,
                error=failure(fact.error),
                total_cost=_money(fact.total_cost),
            )
        case d.ProcessCancelled():
            return pb.ProcessCancelled(**common, cancelled_by=fact.cancelled_by, reason=fact.reason)
        case d.ProcessPaused():
            return pb.ProcessPaused(**common, paused_by=fact.paused_by, reason=fact.reason)
        case d.ProcessResumed():
            return pb.ProcessResumed(**common, resumed_by=fact.resumed_by)
        case d.ExecutionMigrated():
            return pb.ExecutionMigrated(
                **common,
                from_process_id=fact.from_process_id,
                from_version=fact.from_version,
                step_mapping=fact.step_mapping,
                migrated_by=fact.migrated_by,
            )
        case d.StepStarted():
            return pb.StepStarted(
                **common,
                step_id=fact.step_id,
                step_name=fact.step_name,
                kind=STEP_KINDS[fact.kind],
                iteration=fact.iteration,
                attempt=fact.attempt,
            )
        case d.StepCompleted():
            return pb.StepCompleted(
                **common,
                step_id=fact.step_id,
                iteration=fact.iteration,
                attempt=fact.attempt,
                output=fact.output,
                structured_output=struct(fact.structured_output),
                cost=_money(fact.cost),
                duration=duration(fact.duration),
                decision=fact.decision,
            )
        case d.StepFailed():
            return pb.StepFailed(
                **common,
                step_id=fact.step_id,
                iteration=fact.iteration,
                attempt=fact.attempt,
                error=failure(fact.error),
                will_retry=fact.will_retry,
                next_attempt_time=timestamp(fact.next_attempt_time),
            )
        case d.StepSkipped():
            return pb.StepSkipped(
                **common, step_id=fact.step_id, iteration=fact.iteration, reason=fact.reason
            )
        case d.GatewayEvaluated():
            return pb.GatewayEvaluated(
                **common,
                step_id=fact.step_id,
                iteration=fact.iteration,
                gateway_type=GATEWAY_TYPES[fact.gateway_type],
                selected_targets=fact.selected_targets,
                routes=[
                    pb.RouteEvaluation(
                        target=r.target,
                        condition=r.condition,
                        matched=r.matched,
                        value=r.value,
                        is_default=r.is_default,
                    )
                    for r in fact.routes
                ],
            )
        case d.BudgetWarning():
            return pb.BudgetWarning(
                **common, total_cost=_money(fact.total_cost), budget=_money(fact.budget)
            )
        case d.BudgetExceeded():
            return pb.BudgetExceeded(
                **common,
                total_cost=_money(fact.total_cost),
                budget=_money(fact.budget),
                action=BUDGET_ACTIONS[fact.action],
            )
    compensation = compensation_fact(fact, common)
    if compensation is not None:
        return compensation
    raise TypeError(f"not a fact: {fact!r}")


# ----------------------------------------------------------------- commands out


def _step_ref(ref: d.StepRef | None) -> types_pb2.StepRef | None:
    if ref is None:
        return None
    return types_pb2.StepRef(
        execution_id=ref.execution_id,
        step_id=ref.step_id,
        iteration=ref.iteration,
        attempt=ref.attempt,
    )


def work_payload(payload: d.WorkPayload) -> work_pb2.WorkPayload:
    match payload:
        case d.AgentTaskWork():
            return work_pb2.WorkPayload(
                agent_task=work_pb2.AgentTaskPayload(
                    agent=payload.agent, message=payload.message, max_cost=_money(payload.max_cost)
                )
            )
        case d.ToolRunWork():
            return work_pb2.WorkPayload(
                tool_run=work_pb2.ToolRunPayload(
                    action=ACTION_KINDS[payload.action], arguments=payload.arguments
                )
            )
        case d.NotificationWork():
            return work_pb2.WorkPayload(
                notification=work_pb2.NotificationPayload(
                    channel=CHANNELS[payload.channel],
                    target=payload.target,
                    subject=payload.subject,
                    message=payload.message,
                )
            )
    raise TypeError(f"not a work payload: {payload!r}")


def request_work(command: d.RequestWork) -> work_service_pb2.RequestWorkRequest:
    return work_service_pb2.RequestWorkRequest(
        request_id=command.key,
        payload=work_payload(command.payload),
        correlation=_step_ref(command.correlation),
        timeout=duration(command.timeout),
    )


def request_approval(command: d.RequestApproval) -> approval_service_pb2.RequestApprovalRequest:
    ref = command.correlation
    return approval_service_pb2.RequestApprovalRequest(
        request_id=command.key,
        execution_id=ref.execution_id,
        step_id=ref.step_id,
        iteration=ref.iteration,
        title=command.title,
        approvers=command.approvers,
        timeout=duration(command.timeout),
        on_timeout=TIMEOUT_ACTIONS[command.on_timeout],
        artifacts=[
            approval_pb2.Artifact(name=a.name, reference=a.reference, text=a.text)
            for a in command.artifacts
        ],
        reminder_interval=duration(command.reminder_interval),
        max_reminders=command.max_reminders,
    )


def cancel_key(key: str) -> str:
    """Idempotency key of the cancel of the request sent with ``key``."""
    return f"{key}/cancel"


def cancel_work(command: d.CancelWork) -> work_service_pb2.CancelWorkRequest:
    return work_service_pb2.CancelWorkRequest(
        request_id=cancel_key(command.key), reason=command.reason
    )


def cancel_approval(command: d.CancelApproval) -> approval_service_pb2.CancelApprovalRequest:
    return approval_service_pb2.CancelApprovalRequest(
        request_id=cancel_key(command.key), reason=command.reason
    )


# ----------------------------------------------------------------- facts in


def _correlation(ref: types_pb2.StepRef) -> dict[str, Any]:
    return {"step_id": ref.step_id, "iteration": ref.iteration, "attempt": ref.attempt}


def work_fact_to_event(fact: Message, now: datetime) -> tuple[str, d.Event] | None:
    """(execution id, engine event) of a work fact the engine waits for, else None."""
    if isinstance(fact, work_facts.WorkCompleted) and fact.correlation.execution_id:
        result = fact.result
        return fact.correlation.execution_id, d.WorkCompleted(
            now=now,
            **_correlation(fact.correlation),
            output=result.output,
            cost=money_from_proto(result.cost) if result.HasField("cost") else None,
            structured=(
                struct_to_dict(result.structured_output)
                if result.HasField("structured_output")
                else None
            ),
        )
    if isinstance(fact, work_facts.WorkFailed) and fact.correlation.execution_id:
        return fact.correlation.execution_id, d.WorkFailed(
            now=now,
            **_correlation(fact.correlation),
            code=fact.error.code or "WORK_FAILED",
            message=fact.error.message,
            cost=_spent(fact.error.details),
        )
    return None


def _spent(details: Mapping[str, str]) -> Money | None:
    """Money a failed attempt spent (``cost`` and ``cost_currency`` in the failure's
    details, as executors report an agent over its max_cost), or None."""
    amount, currency = details.get("cost", ""), details.get("cost_currency", "")
    if not amount or not currency or len(amount) > 40:
        return None
    try:
        value = Decimal(amount)
    except ArithmeticError:
        return None
    if not value.is_finite() or value < 0 or len(currency) != 3 or not currency.isalpha():
        return None
    return Money(value, currency.upper())


def approval_fact_to_event(fact: Message, now: datetime) -> tuple[str, d.Event] | None:
    if isinstance(fact, approval_facts.ApprovalDecided) and fact.decision in DECISIONS:
        return fact.execution_id, d.ApprovalDecided(
            now=now,
            step_id=fact.step_id,
            iteration=fact.iteration,
            decision=DECISIONS[fact.decision],
            decided_by=fact.decided_by,
            comment=fact.comment,
        )
    return None


# ----------------------------------------------------------------- state out


def step_view(
    process: d.CompiledProcess, step_id: str, step: d.StepState
) -> execution_pb2.StepExecution:
    definition = process.steps[step_id]
    view = execution_pb2.StepExecution(
        step_id=step_id,
        name=definition.display_name,
        kind=STEP_KINDS[definition.kind],
        status=STEP_STATUSES[step.status],
        attempt=step.attempt,
        iteration=step.iteration,
        start_time=timestamp(step.started_at),
        end_time=timestamp(step.ended_at),
        output=step.output or "",
        structured_output=struct(step.structured),
        cost=_money(step.cost),
        error=failure(step.error),
        skip_reason=step.skip_reason,
        decision=step.decision,
        next_attempt_time=timestamp(step.next_attempt_time),
    )
    if step.started_at is not None and step.ended_at is not None:
        view.duration.FromTimedelta(step.ended_at - step.started_at)
    config = definition.config
    if step.awaited_key and isinstance(config, WaitForMessageConfig):
        view.awaited_message.message_name = config.message
        view.awaited_message.correlation_key = step.awaited_key
    view.child_execution_id = step.child
    if step.for_each is not None:
        view.items_total = step.for_each.total
        view.items_done = step.for_each.ended
        view.items_failed = step.for_each.failed
    view.iterations.extend(_iteration(summary) for summary in step.history)
    view.iterations_omitted = step.history_dropped
    return view


def _iteration(summary: dict[str, Any]) -> execution_pb2.StepIteration:
    """One earlier iteration, from the bounded summary the state keeps of it."""
    started = _time(summary.get("started_at"))
    ended = _time(summary.get("ended_at"))
    cost = summary.get("cost")
    error = summary.get("error")
    view = execution_pb2.StepIteration(
        iteration=int(summary.get("iteration", 0)),
        status=STEP_STATUSES[d.StepStatus(summary.get("status", "pending"))],
        attempt=int(summary.get("attempt", 0)),
        start_time=timestamp(started),
        end_time=timestamp(ended),
        output=str(summary.get("output", "")),
        output_truncated=bool(summary.get("output_truncated", False)),
        cost=_money(Money(Decimal(cost["amount"]), cost["currency"]) if cost else None),
        decision=str(summary.get("decision", "")),
        error=failure(d.Failure.from_dict(error) if error else None),
        skip_reason=str(summary.get("skip_reason", "")),
    )
    if started is not None and ended is not None:
        view.duration.FromTimedelta(ended - started)
    return view


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _progress(state: d.ExecutionState, total: int) -> execution_pb2.Progress:
    finished, total = state.progress(total)
    return execution_pb2.Progress(finished=finished, total=total)


def execution_view(
    process: d.CompiledProcess,
    state: d.ExecutionState,
    *,
    process_name: str,
    created_at: datetime,
    with_steps: bool = True,
) -> execution_pb2.Execution:
    spec = process.spec
    view = execution_pb2.Execution(
        id=state.execution_id,
        process_id=process.definition_id,
        process_name=process_name,
        process_version=process.version,
        status=EXECUTION_STATUSES[state.status],
        input=struct(state.input),
        triggered_by=state.triggered_by,
        trigger_kind=TRIGGER_KINDS[state.trigger_kind],
        create_time=timestamp(created_at),
        start_time=timestamp(state.started_at),
        end_time=timestamp(state.ended_at),
        total_cost=_money(state.total_cost),
        budget=_money(spec.budget.limit if spec.budget else None),
        progress=_progress(state, len(process.steps)),
        current_step_ids=state.current_step_ids,
        error=failure(state.error),
        cancel_reason=state.cancel_reason,
        cancelled_by=state.cancelled_by,
    )
    if state.parent is not None:
        view.parent_execution_id = state.parent.execution_id
        view.parent_step_id = state.parent.step_id
        view.depth = state.parent.depth
    if state.compensation is not None:
        view.compensation.CopyFrom(compensation_view(state.compensation))
    if with_steps:
        view.steps.extend(step_view(process, s.id, state.step(s.id)) for s in spec.steps)
    return view
