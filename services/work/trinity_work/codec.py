"""Messages on the wire: the domain <-> the protobuf contracts (resources, facts, intents).

Used by the API's translation (:mod:`trinity_work.api.translate`, which also checks
untrusted requests), by the outbox (facts and intents) and by the executor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from trinity.process.common.v1 import enums_pb2, types_pb2
from trinity.process.work.v1 import facts_pb2, intents_pb2, work_pb2
from trinity_platform.enum_maps import enum_map, reverse
from trinity_platform.json_values import struct_to_dict
from trinity_process_model.proto_codec import ACTION_KINDS, CHANNELS
from trinity_work.domain.model import (
    ActionKind,
    AgentTask,
    Channel,
    Evidence,
    EvidenceKind,
    Failure,
    Money,
    Notification,
    Payload,
    StepRef,
    ToolRun,
    WorkKind,
    WorkResult,
    WorkStatus,
)
from trinity_work.domain.work import WorkRequest

_NANOS = Decimal(1_000_000_000)

KIND_TO_PROTO = enum_map(WorkKind, work_pb2.WorkKind, "WORK_KIND_")
KIND_FROM_PROTO = reverse(KIND_TO_PROTO)

STATUS_TO_PROTO = enum_map(WorkStatus, work_pb2.WorkStatus, "WORK_STATUS_")
STATUS_FROM_PROTO = reverse(STATUS_TO_PROTO)

ACTION_TO_PROTO: dict[ActionKind, enums_pb2.ActionKind.ValueType] = ACTION_KINDS
ACTION_FROM_PROTO = reverse(ACTION_TO_PROTO)

CHANNEL_TO_PROTO: dict[Channel, enums_pb2.Channel.ValueType] = CHANNELS
CHANNEL_FROM_PROTO = reverse(CHANNEL_TO_PROTO)

EVIDENCE_TO_PROTO = enum_map(EvidenceKind, work_pb2.EvidenceKind, "EVIDENCE_KIND_")
EVIDENCE_FROM_PROTO = reverse(EVIDENCE_TO_PROTO)


# --------------------------------------------------------------------------- scalars


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def duration(value: timedelta) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d


def from_duration(d: duration_pb2.Duration) -> timedelta:
    return d.ToTimedelta()


def money(value: Money) -> types_pb2.Money:
    amount = value.amount
    units = int(amount)  # truncates toward zero, so nanos share the sign of units
    nanos = int(((amount - units) * _NANOS).to_integral_value())
    return types_pb2.Money(currency_code=value.currency, units=units, nanos=nanos)


def from_money(value: types_pb2.Money) -> Money:
    return Money(Decimal(value.units) + Decimal(value.nanos) / _NANOS, value.currency_code)


def step_ref(ref: StepRef) -> types_pb2.StepRef:
    return types_pb2.StepRef(
        execution_id=ref.execution_id,
        step_id=ref.step_id,
        iteration=ref.iteration,
        attempt=ref.attempt,
    )


def from_step_ref(ref: types_pb2.StepRef) -> StepRef:
    return StepRef(ref.execution_id, ref.step_id, ref.iteration, ref.attempt)


def failure(value: Failure) -> types_pb2.Failure:
    return types_pb2.Failure(code=value.code, message=value.message, details=dict(value.details))


def from_failure(value: types_pb2.Failure) -> Failure:
    return Failure(value.code, value.message, dict(value.details))


# --------------------------------------------------------------------------- payload


def payload(value: Payload) -> work_pb2.WorkPayload:
    if isinstance(value, AgentTask):
        task = work_pb2.AgentTaskPayload(agent=value.agent, message=value.message)
        if value.max_cost is not None:
            task.max_cost.CopyFrom(money(value.max_cost))
        return work_pb2.WorkPayload(agent_task=task)
    if isinstance(value, ToolRun):
        return work_pb2.WorkPayload(
            tool_run=work_pb2.ToolRunPayload(
                action=ACTION_TO_PROTO[value.action], arguments=dict(value.arguments)
            )
        )
    return work_pb2.WorkPayload(
        notification=work_pb2.NotificationPayload(
            channel=CHANNEL_TO_PROTO[value.channel],
            target=value.target,
            subject=value.subject,
            message=value.message,
        )
    )


def from_payload(value: work_pb2.WorkPayload) -> Payload:
    """A validated proto payload → the domain (see ``api.translate`` for the checks)."""
    case = value.WhichOneof("kind")
    if case == "agent_task":
        task = value.agent_task
        return AgentTask(
            task.agent,
            task.message,
            from_money(task.max_cost) if task.HasField("max_cost") else None,
        )
    if case == "tool_run":
        return ToolRun(ACTION_FROM_PROTO[value.tool_run.action], dict(value.tool_run.arguments))
    note = value.notification
    return Notification(CHANNEL_FROM_PROTO[note.channel], note.target, note.subject, note.message)


# --------------------------------------------------------------------------- result


def result(value: WorkResult) -> work_pb2.WorkResult:
    out = work_pb2.WorkResult(
        output=value.output,
        context_used=value.context_used,
        evidence=[
            work_pb2.Evidence(kind=EVIDENCE_TO_PROTO[e.kind], name=e.name, uri=e.uri, text=e.text)
            for e in value.evidence
        ],
    )
    if value.structured_output is not None:
        out.structured_output.update(dict(value.structured_output))
    if value.cost is not None:
        out.cost.CopyFrom(money(value.cost))
    return out


def from_result(value: work_pb2.WorkResult) -> WorkResult:
    structured: dict[str, Any] | None = None
    if value.HasField("structured_output"):
        structured = struct_to_dict(value.structured_output)
    return WorkResult(
        output=value.output,
        structured_output=structured,
        cost=from_money(value.cost) if value.HasField("cost") else None,
        context_used=value.context_used,
        evidence=tuple(
            Evidence(EVIDENCE_FROM_PROTO.get(e.kind, EvidenceKind.SUMMARY), e.name, e.uri, e.text)
            for e in value.evidence
        ),
    )


def struct_from_json_object(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


# --------------------------------------------------------------------------- resource


def work_request(work: WorkRequest) -> work_pb2.WorkRequest:
    out = work_pb2.WorkRequest(
        id=work.id,
        request_id=work.request_id,
        kind=KIND_TO_PROTO[work.kind],
        payload=payload(work.payload),
        correlation=step_ref(work.correlation),
        status=STATUS_TO_PROTO[work.status],
        executor_id=work.executor_id,
        delivery=work.delivery,
        max_deliveries=work.max_deliveries,
        timeout=duration(work.timeout),
        create_time=timestamp(work.created_at),
        cancel_requested=work.cancel_requested,
        cancel_reason=work.cancel_reason,
    )
    if work.lease_expires_at is not None:
        out.lease_expire_time.CopyFrom(timestamp(work.lease_expires_at))
    if work.started_at is not None:
        out.start_time.CopyFrom(timestamp(work.started_at))
    if work.ended_at is not None:
        out.end_time.CopyFrom(timestamp(work.ended_at))
    if work.result is not None:
        out.result.CopyFrom(result(work.result))
    if work.error is not None:
        out.error.CopyFrom(failure(work.error))
    return out


# --------------------------------------------------------------------------- facts, intent


def work_requested(work: WorkRequest, at: datetime) -> facts_pb2.WorkRequested:
    return facts_pb2.WorkRequested(
        work_id=work.id,
        kind=KIND_TO_PROTO[work.kind],
        correlation=step_ref(work.correlation),
        payload=payload(work.payload),
        occur_time=timestamp(at),
    )


def execution_requested(
    work: WorkRequest, delivery: int, at: datetime
) -> intents_pb2.WorkExecutionRequested:
    return intents_pb2.WorkExecutionRequested(
        work_id=work.id,
        kind=KIND_TO_PROTO[work.kind],
        payload=payload(work.payload),
        correlation=step_ref(work.correlation),
        delivery=delivery,
        timeout=duration(work.timeout),
        request_time=timestamp(at),
    )


def _about(work: WorkRequest, at: datetime) -> dict[str, Any]:
    """The fields every work fact carries: which work, its kind, its step and when."""
    return {
        "work_id": work.id,
        "kind": KIND_TO_PROTO[work.kind],
        "correlation": step_ref(work.correlation),
        "occur_time": timestamp(at),
    }


def work_started(
    work: WorkRequest, executor_id: str, delivery: int, at: datetime
) -> facts_pb2.WorkStarted:
    return facts_pb2.WorkStarted(**_about(work, at), executor_id=executor_id, delivery=delivery)


def work_completed(work: WorkRequest, value: WorkResult, at: datetime) -> facts_pb2.WorkCompleted:
    return facts_pb2.WorkCompleted(**_about(work, at), result=result(value))


def work_failed(work: WorkRequest, value: Failure, at: datetime) -> facts_pb2.WorkFailed:
    return facts_pb2.WorkFailed(**_about(work, at), error=failure(value))


def work_cancelled(work: WorkRequest, reason: str, at: datetime) -> facts_pb2.WorkCancelled:
    return facts_pb2.WorkCancelled(**_about(work, at), reason=reason)
