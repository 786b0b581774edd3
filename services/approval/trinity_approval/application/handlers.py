"""Command and query handlers: plain coroutines ``(command, uow, …)``.

Mutating commands are idempotent: the request key is remembered in the same
transaction as the change (the remembered result is the approval id, and a retry
answers with that approval). Facts and notifications are written by the unit of
work's ``commit()``, from the events the aggregate raised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from trinity_approval.application.commands import (
    CancelApproval,
    Cursor,
    ListApprovals,
    ListPendingApprovals,
    RequestApproval,
    SubmitDecision,
)
from trinity_approval.application.ports import UnitOfWork
from trinity_approval.domain import Approval, ApprovalNotFound

REQUEST_SCOPE = "approval.RequestApproval"
DECISION_SCOPE = "approval.SubmitDecision"
CANCEL_SCOPE = "approval.CancelApproval"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Page:
    items: Sequence[Approval]
    next_after: Cursor | None


def fingerprint(command: Any, *, without: tuple[str, ...] = ("request_id",)) -> str:
    """sha256 of a command's values (a dataclass; minus its idempotency key)."""
    values = {k: v for k, v in asdict(command).items() if k not in without}
    encoded = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def decision_key(principal: str, request_id: str) -> str:
    """Idempotency keys of decisions are per caller: another principal reusing a key
    neither sees the first result nor collides with it."""
    key = f"{principal.strip().casefold()}/{request_id}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


async def _remembered(uow: UnitOfWork, scope: str, key: str, fp: str) -> Approval | None:
    if not key:
        return None
    approval_id = await uow.idempotency.lookup(scope, key, fp)
    if approval_id is None:
        return None
    approval = await uow.approvals.get(approval_id)
    if approval is None:  # pragma: no cover - approvals are never deleted
        raise ApprovalNotFound(approval_id)
    return approval


async def request_approval(
    command: RequestApproval, uow: UnitOfWork, *, now: datetime, new_id: str
) -> Approval:
    fp = fingerprint(command)
    async with uow:
        first = await _remembered(uow, REQUEST_SCOPE, command.request_id, fp)
        if first is not None:
            return first
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
        await uow.approvals.add(approval)
        if command.request_id:
            await uow.idempotency.remember(REQUEST_SCOPE, command.request_id, fp, approval.id)
        await uow.commit()
    return approval


async def submit_decision(command: SubmitDecision, uow: UnitOfWork, *, now: datetime) -> Approval:
    fp = fingerprint(command, without=("request_id", "principal"))
    key = decision_key(command.principal, command.request_id) if command.request_id else ""
    async with uow:
        first = await _remembered(uow, DECISION_SCOPE, key, fp)
        if first is not None:
            return first
        approval = await uow.approvals.get_for_update(command.approval_id)
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
            await uow.approvals.save(approval)
        if key:
            await uow.idempotency.remember(DECISION_SCOPE, key, fp, approval.id)
        await uow.commit()
    return approval


async def cancel_approval(command: CancelApproval, uow: UnitOfWork, *, now: datetime) -> Approval:
    fp = fingerprint(command)
    async with uow:
        first = await _remembered(uow, CANCEL_SCOPE, command.request_id, fp)
        if first is not None:
            return first
        approval = await uow.approvals.get_for_update(command.approval_id)
        if approval is None:
            raise ApprovalNotFound(command.approval_id)
        if approval.cancel(command.reason, now):
            await uow.approvals.save(approval)
        if command.request_id:
            await uow.idempotency.remember(CANCEL_SCOPE, command.request_id, fp, approval.id)
        await uow.commit()
    return approval


async def fire_deadline(approval_id: str, uow: UnitOfWork, *, now: datetime) -> Approval | None:
    """Apply the timeout of one due approval; None when there is nothing to do
    (decided meanwhile, deadline moved, or another replica holds it right now)."""
    async with uow:
        approval = await uow.approvals.get_for_update(approval_id, skip_locked=True)
        if approval is None or not approval.is_pending or approval.deadline > now:
            return None
        approval.time_out(now)
        await uow.approvals.save(approval)
        await uow.commit()
    return approval


async def get_approval(approval_id: str, uow: UnitOfWork) -> Approval:
    async with uow:
        approval = await uow.approvals.get(approval_id)
    if approval is None:
        raise ApprovalNotFound(approval_id)
    return approval


async def list_pending_approvals(query: ListPendingApprovals, uow: UnitOfWork) -> Page:
    async with uow:
        found = await uow.approvals.list_pending(query.approver, query.after, query.page_size + 1)
    return _page(found, query.page_size, lambda a: (a.deadline, a.id))


async def list_approvals(query: ListApprovals, uow: UnitOfWork) -> Page:
    async with uow:
        found = await uow.approvals.list_for_execution(
            query.execution_id, query.status, query.after, query.page_size + 1
        )
    return _page(found, query.page_size, lambda a: (a.created_at, a.id))


def _page(found: Sequence[Approval], size: int, key: Callable[[Approval], Cursor]) -> Page:
    items = list(found[:size])
    more = len(found) > size
    next_after = key(items[-1]) if more and items else None
    return Page(items, next_after)
