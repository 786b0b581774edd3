"""Compensation's facts and progress as the contract's messages (beside ``translate``).

Enum tables are built with ``trinity_platform.enum_maps``: a member missing on either
side stops the service at import, never at run time.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from trinity.process.common.v1 import types_pb2
from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1 import facts_pb2 as pb
from trinity_execution import domain as d
from trinity_platform.enum_maps import enum_map

REASONS = enum_map(d.CompensationReason, execution_pb2.CompensationReason, "COMPENSATION_REASON_")
STEP_COMPENSATION_STATUSES = enum_map(
    d.StepCompensationStatus, execution_pb2.StepCompensationStatus, "STEP_COMPENSATION_STATUS_"
)


def failure(value: d.Failure | None) -> types_pb2.Failure | None:
    """A domain failure as the contract's (here, below ``translate``, which uses it too)."""
    if value is None:
        return None
    return types_pb2.Failure(code=value.code, message=value.message, details=value.details)


def compensation_fact(fact: d.Fact, common: dict[str, Any]) -> Message | None:
    """The message of a compensation fact, None for any other fact."""
    match fact:
        case d.CompensationStarted():
            return pb.CompensationStarted(
                **common,
                reason=REASONS[fact.reason],
                targets=[
                    pb.CompensationTarget(step_id=step_id, iteration=iteration)
                    for step_id, iteration in fact.targets
                ],
            )
        case d.StepCompensated():
            return pb.StepCompensated(
                **common,
                step_id=fact.step_id,
                iteration=fact.iteration,
                attempt=fact.attempt,
                output=fact.output,
            )
        case d.CompensationFailed():
            return pb.CompensationFailed(
                **common,
                step_id=fact.step_id,
                iteration=fact.iteration,
                attempt=fact.attempt,
                error=failure(fact.error),
                not_compensated=fact.not_compensated,
            )
        case d.CompensationCompleted():
            return pb.CompensationCompleted(**common, compensated=fact.compensated)
    return None


def compensation_view(comp: d.CompensationState) -> execution_pb2.CompensationProgress:
    view = execution_pb2.CompensationProgress(
        reason=REASONS[comp.reason], failed_step_id=comp.failed_step_id
    )
    if comp.started_at is not None:
        view.start_time.FromDatetime(comp.started_at)
    if comp.ended_at is not None:
        view.end_time.FromDatetime(comp.ended_at)
    for entry in comp.steps:
        step = view.steps.add(
            step_id=entry.step_id,
            iteration=entry.iteration,
            status=STEP_COMPENSATION_STATUSES[entry.status],
            attempt=entry.attempt,
            error=failure(entry.error),
            output=entry.output,
        )
        if entry.next_attempt_time is not None:
            step.next_attempt_time.FromDatetime(entry.next_attempt_time)
    return view
