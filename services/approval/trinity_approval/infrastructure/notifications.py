"""Notifications to approvers, as work requests of kind notification.

This service never sends mail itself. When an approval is requested, and at each
reminder (on_timeout NOTIFY), the unit of work writes one ``dispatches`` row per
approver — in the transaction of the change — holding a serialized
``RequestWorkRequest`` whose idempotency key is
``approval/<approval id>/<request|reminder-N>/<approver hash>``. The sender
(:mod:`trinity_approval.infrastructure.work_sender`) delivers them to
``WorkService/RequestWork`` and retries with capped backoff until the work
service accepts (or refuses for good).
When an approval stops being pending, its unsent notifications become obsolete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity.process.common.v1 import enums_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity_approval.domain import (
    Approval,
    ApprovalEvent,
    ApprovalRequested,
    ApprovalTimedOut,
)
from trinity_approval.infrastructure.tables import dispatches

PENDING, DONE, FAILED, OBSOLETE = "pending", "done", "failed", "obsolete"

MAX_ARTIFACT_TEXT = 2000
MAX_SUBJECT_TITLE = 200


@dataclass(frozen=True)
class NotificationPolicy:
    """How an approver is reached. Email addresses get CHANNEL_EMAIL; other principal
    names get ``principal_channel`` with ``principal_target`` (None: not notified)."""

    principal_channel: enums_pb2.Channel.ValueType | None = enums_pb2.CHANNEL_FILE
    principal_target: str = "approvals.jsonl"

    def route(self, approver: str) -> tuple[enums_pb2.Channel.ValueType, str] | None:
        if "@" in approver:
            return enums_pb2.CHANNEL_EMAIL, approver
        if self.principal_channel is None:
            return None
        return self.principal_channel, self.principal_target


def dispatch_key(approval_id: str, purpose: str, approver: str) -> str:
    digest = hashlib.sha256(approver.strip().casefold().encode()).hexdigest()[:16]
    return f"approval/{approval_id}/{purpose}/{digest}"


def _describe(approval: Approval) -> str:
    lines = [
        f"Approval: {approval.title or approval.step_id}",
        f"Approval id: {approval.id}",
        f"Execution: {approval.execution_id}, step {approval.step_id} "
        f"(iteration {approval.iteration})",
        f"Deadline: {approval.deadline.isoformat()}",
        f"On timeout: {approval.on_timeout.value}",
    ]
    for artifact in approval.artifacts:
        lines.append(f"- {artifact.name}: {artifact.reference}".rstrip(": "))
        if artifact.text:
            text = artifact.text
            if len(text) > MAX_ARTIFACT_TEXT:
                text = text[:MAX_ARTIFACT_TEXT] + " […]"
            lines.append(text)
    lines.append(
        "Decide with trinity.process.approval.v1.ApprovalService/SubmitDecision "
        f"(approval_id {approval.id}): approve, reject or request changes."
    )
    return "\n".join(lines)


def notification_request(
    approval: Approval,
    approver: str,
    purpose: str,
    channel: enums_pb2.Channel.ValueType,
    target: str,
) -> work_service_pb2.RequestWorkRequest:
    title = approval.title or f"step {approval.step_id}"
    if len(title) > MAX_SUBJECT_TITLE:
        title = title[: MAX_SUBJECT_TITLE - 1] + "…"
    if purpose == "request":
        subject = f"Approval requested: {title}"
        intro = f"{approver}, your decision is requested."
    else:
        subject = f"Reminder: approval waiting: {title}"
        intro = (
            f"{approver}, reminder {approval.reminders_sent} of {approval.max_reminders}: "
            "this approval still waits for a decision."
        )
    return work_service_pb2.RequestWorkRequest(
        request_id=dispatch_key(approval.id, purpose, approver),
        payload=work_pb2.WorkPayload(
            notification=work_pb2.NotificationPayload(
                channel=channel,
                target=target,
                subject=subject,
                message=f"{intro}\n\n{_describe(approval)}",
            )
        ),
    )


class NotificationPlanner:
    """Turns an approval's events into dispatch rows (inside the unit of work)."""

    def __init__(self, policy: NotificationPolicy) -> None:
        self._policy = policy

    async def plan(
        self,
        conn: AsyncConnection,
        approval: Approval,
        events: Sequence[ApprovalEvent],
        now: datetime,
    ) -> int:
        """Insert the notifications ``events`` call for; returns how many."""
        rows = []
        for event in events:
            purpose = None
            if isinstance(event, ApprovalRequested):
                purpose = "request"
            elif isinstance(event, ApprovalTimedOut) and event.new_deadline is not None:
                purpose = f"reminder-{event.reminder}"
            if purpose is None:
                continue
            for approver in approval.approvers:
                route = self._policy.route(approver)
                if route is None:
                    continue
                request = notification_request(approval, approver, purpose, *route)
                rows.append(
                    {
                        "key": request.request_id,
                        "approval_id": approval.id,
                        "payload": request.SerializeToString(deterministic=True),
                        "status": PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
        if not approval.is_pending:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.approval_id == approval.id, dispatches.c.status == PENDING)
                .values(status=OBSOLETE)
            )
            return 0
        if rows:
            await conn.execute(insert(dispatches), rows)
        return len(rows)
