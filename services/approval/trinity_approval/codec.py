"""Messages on the wire: the domain <-> the protobuf contracts (the anti-corruption layer).

Enums, times and the Approval resource (for the API's responses); events to facts for
the outbox. Proto types stop here and in :mod:`trinity_approval.api.translate`:
neither the domain nor the handlers see them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from trinity.process.approval.v1 import approval_pb2, facts_pb2
from trinity.process.common.v1 import enums_pb2
from trinity_approval.domain import (
    Approval,
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalEvent,
    ApprovalRequested,
    ApprovalStatus,
    ApprovalTimedOut,
    Artifact,
    Decision,
    TimeoutAction,
)
from trinity_platform.enum_maps import enum_map, reverse

STATUS_TO_PROTO = enum_map(ApprovalStatus, approval_pb2.ApprovalStatus, "APPROVAL_STATUS_")
STATUS_FROM_PROTO = reverse(STATUS_TO_PROTO)

DECISION_TO_PROTO = enum_map(Decision, approval_pb2.Decision, "DECISION_")
DECISION_FROM_PROTO = reverse(DECISION_TO_PROTO)

TIMEOUT_ACTION_TO_PROTO = enum_map(TimeoutAction, enums_pb2.TimeoutAction, "TIMEOUT_ACTION_")
TIMEOUT_ACTION_FROM_PROTO = reverse(TIMEOUT_ACTION_TO_PROTO)


def utc(value: datetime) -> datetime:
    """An aware UTC datetime (SQLite gives naive ones back)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(utc(value))
    return stamp


def duration(value: timedelta | None) -> Duration | None:
    if value is None:
        return None
    result = Duration()
    result.FromTimedelta(value)
    return result


def artifact_to_proto(artifact: Artifact) -> approval_pb2.Artifact:
    return approval_pb2.Artifact(
        name=artifact.name, reference=artifact.reference, text=artifact.text
    )


def approval_to_proto(approval: Approval) -> approval_pb2.Approval:
    message = approval_pb2.Approval(
        id=approval.id,
        execution_id=approval.execution_id,
        step_id=approval.step_id,
        iteration=approval.iteration,
        title=approval.title,
        approvers=list(approval.approvers),
        deadline=timestamp(approval.deadline),
        on_timeout=TIMEOUT_ACTION_TO_PROTO[approval.on_timeout],
        artifacts=[artifact_to_proto(a) for a in approval.artifacts],
        status=STATUS_TO_PROTO[approval.status],
        decided_by=approval.decided_by,
        comment=approval.comment,
        create_time=timestamp(approval.created_at),
        reminders_sent=approval.reminders_sent,
        max_reminders=approval.max_reminders,
        cancel_reason=approval.cancel_reason,
    )
    if approval.decision is not None:
        message.decision = DECISION_TO_PROTO[approval.decision]
    if approval.decided_at is not None:
        message.decide_time.FromDatetime(utc(approval.decided_at))
    if approval.reminder_interval is not None:
        message.reminder_interval.FromTimedelta(approval.reminder_interval)
    return message


def _stamp(fact: Any, event: ApprovalEvent) -> None:
    """The fields every approval fact shares: what it is about, and when."""
    fact.approval_id = event.approval_id
    fact.execution_id = event.execution_id
    fact.step_id = event.step_id
    fact.iteration = event.iteration
    fact.occur_time.FromDatetime(utc(event.occurred_at))


def event_to_fact(event: ApprovalEvent) -> tuple[str, Message]:
    """The fact name (last token of its subject) and message of a domain event."""
    fact: Message
    if isinstance(event, ApprovalRequested):
        fact = facts_pb2.ApprovalRequested(
            approvers=list(event.approvers),
            deadline=timestamp(event.deadline),
            artifacts=[artifact_to_proto(a) for a in event.artifacts],
            title=event.title,
        )
    elif isinstance(event, ApprovalDecided):
        fact = facts_pb2.ApprovalDecided(
            decision=DECISION_TO_PROTO[event.decision],
            decided_by=event.decided_by,
            comment=event.comment,
        )
    elif isinstance(event, ApprovalTimedOut):
        fact = facts_pb2.ApprovalTimedOut(
            action_taken=TIMEOUT_ACTION_TO_PROTO[event.action_taken],
            reminder=event.reminder,
            new_deadline=timestamp(event.new_deadline),
        )
    elif isinstance(event, ApprovalCancelled):
        fact = facts_pb2.ApprovalCancelled(reason=event.reason)
    else:
        raise TypeError(f"no fact for {type(event).__name__}")
    _stamp(fact, event)
    return type(event).__name__, fact
