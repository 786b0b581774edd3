"""Command and query handlers: plain coroutines ``(command, transaction, …)``.

Each runs inside one transaction of the unit of work (see ``service``), which makes
commands idempotent by key (remembering the approval id, and answering a retry with
that approval) and writes the facts and notifications of the approvals' new events
at the commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from trinity_approval.application.commands import (
    CancelApproval,
    Cursor,
    ListApprovals,
    ListPendingApprovals,
    RequestApproval,
    SubmitDecision,
)
from trinity_approval.application.ports import ApprovalTransaction
from trinity_approval.domain import Approval, ApprovalNotFound

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Page:
    items: Sequence[Approval]
    next_after: Cursor | None


def decision_key(principal: str, request_id: str) -> str:
    """Idempotency keys of decisions are per caller: another principal reusing a key
    neither sees the first result nor collides with it."""
    key = f"{principal.strip().casefold()}/{request_id}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


async def request_approval(
    command: RequestApproval, tx: ApprovalTransaction, *, now: datetime, new_id: str
) -> Approval:
    approval = Approval.request(
        id=new_id,
        execution_id=command.execution_id,
        step_id=command.step_id,
        iteration=command.iteration,
        title=command.title,
        approvers=command.approvers,
        timeout=command.timeout,
        on_timeout=command.on_timeout,
        artifacts=command.artifacts,
        reminder_interval=command.reminder_interval,
        max_reminders=command.max_reminders,
        now=now,
    )
    await tx.approvals.add(approval)
    return approval


async def submit_decision(
    command: SubmitDecision, tx: ApprovalTransaction, *, now: datetime
) -> Approval:
    approval = await tx.approvals.get_for_update(command.approval_id)
    if approval is None:
        raise ApprovalNotFound(command.approval_id)
    changed = approval.decide(
        principal=command.principal,
        decision=command.decision,
        comment=command.comment,
        now=now,
        request_id=command.request_id,
    )
    if changed:
        await tx.approvals.save(approval)
    return approval


async def cancel_approval(
    command: CancelApproval, tx: ApprovalTransaction, *, now: datetime
) -> Approval:
    approval = await tx.approvals.get_for_update(command.approval_id)
    if approval is None:
        raise ApprovalNotFound(command.approval_id)
    if approval.cancel(command.reason, now):
        await tx.approvals.save(approval)
    return approval


async def fire_deadline(
    approval_id: str, tx: ApprovalTransaction, *, now: datetime
) -> Approval | None:
    """Apply the timeout of one due approval; None when there is nothing to do
    (decided meanwhile, deadline moved, or another replica holds it right now)."""
    approval = await tx.approvals.get_for_update(approval_id, skip_locked=True)
    if approval is None or not approval.is_pending or approval.deadline > now:
        return None
    approval.time_out(now)
    await tx.approvals.save(approval)
    return approval


async def get_approval(approval_id: str, tx: ApprovalTransaction) -> Approval:
    approval = await tx.approvals.get(approval_id)
    if approval is None:
        raise ApprovalNotFound(approval_id)
    return approval


async def list_pending_approvals(query: ListPendingApprovals, tx: ApprovalTransaction) -> Page:
    found = await tx.approvals.list_pending(query.approver, query.after, query.page_size + 1)
    return _page(found, query.page_size, lambda a: (a.deadline, a.id))


async def list_approvals(query: ListApprovals, tx: ApprovalTransaction) -> Page:
    found = await tx.approvals.list_for_execution(
        query.execution_id, query.status, query.after, query.page_size + 1
    )
    return _page(found, query.page_size, lambda a: (a.created_at, a.id))


def _page(found: Sequence[Approval], size: int, key: Callable[[Approval], Cursor]) -> Page:
    items = list(found[:size])
    more = len(found) > size
    next_after = key(items[-1]) if more and items else None
    return Page(items, next_after)
