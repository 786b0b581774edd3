"""The application facade: runs each handler in a transaction of the unit of work,
with the service's clock. Commands are idempotent by key (the approval id is
remembered; a retry answers that approval) and run again when they lose a race
(another replica, or the deadline watcher, changed the approval first)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

from trinity_approval.application import handlers
from trinity_approval.application.commands import (
    CancelApproval,
    ListApprovals,
    ListPendingApprovals,
    RequestApproval,
    SubmitDecision,
)
from trinity_approval.application.handlers import Page
from trinity_approval.application.ports import ApprovalTransaction, ApprovalUnitOfWork
from trinity_approval.domain import Approval
from trinity_platform.unit_of_work import Idempotency, fingerprint

Clock = Callable[[], datetime]

REQUEST_SCOPE = "approval.RequestApproval"
DECISION_SCOPE = "approval.SubmitDecision"
CANCEL_SCOPE = "approval.CancelApproval"


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_approval_id() -> str:
    return str(uuid.uuid4())


def _fingerprint_before_issue_14(command: object, without: tuple[str, ...]) -> str:
    """Approval's own fingerprint before the platform's one (the values as JSON, no type
    name). Keys remembered then carry it; they are forgotten after the idempotency
    retention (7 days), after which this can go."""
    values = {k: v for k, v in asdict(command).items() if k not in without}  # type: ignore[call-overload]
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _by_id(
    scope: str, key: str, command: object, without: tuple[str, ...] = ("request_id",)
) -> Idempotency[ApprovalTransaction, Approval]:
    """A command answered, on a repeated key, with the approval it produced."""
    return Idempotency.by_reference(
        scope,
        key,
        fingerprint(command, without=without),
        reference=lambda approval: approval.id,
        load=lambda tx, approval_id: handlers.get_approval(approval_id, tx),
        earlier=(_fingerprint_before_issue_14(command, without),) if key else (),
    )


class ApprovalApplication:
    def __init__(
        self,
        uow: ApprovalUnitOfWork,
        *,
        clock: Clock = utc_now,
        new_id: Callable[[], str] = new_approval_id,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._new_id = new_id

    async def request_approval(self, command: RequestApproval) -> Approval:
        return await self._uow.write(
            lambda tx: handlers.request_approval(
                command, tx, now=self._clock(), new_id=self._new_id()
            ),
            idempotency=_by_id(REQUEST_SCOPE, command.request_id, command),
        )

    async def submit_decision(self, command: SubmitDecision) -> Approval:
        key = handlers.decision_key(command.principal, command.request_id)
        return await self._uow.write(
            lambda tx: handlers.submit_decision(command, tx, now=self._clock()),
            idempotency=_by_id(
                DECISION_SCOPE,
                key if command.request_id else "",
                command,
                without=("request_id", "principal"),
            ),
        )

    async def cancel_approval(self, command: CancelApproval) -> Approval:
        return await self._uow.write(
            lambda tx: handlers.cancel_approval(command, tx, now=self._clock()),
            idempotency=_by_id(CANCEL_SCOPE, command.request_id, command),
        )

    async def fire_deadline(self, approval_id: str) -> Approval | None:
        return await self._uow.write(
            lambda tx: handlers.fire_deadline(approval_id, tx, now=self._clock())
        )

    async def get_approval(self, approval_id: str) -> Approval:
        return await self._uow.read(lambda tx: handlers.get_approval(approval_id, tx))

    async def list_pending_approvals(self, query: ListPendingApprovals) -> Page:
        return await self._uow.read(lambda tx: handlers.list_pending_approvals(query, tx))

    async def list_approvals(self, query: ListApprovals) -> Page:
        return await self._uow.read(lambda tx: handlers.list_approvals(query, tx))

    async def due_approvals(self, limit: int) -> list[str]:
        async def due(tx: ApprovalTransaction) -> list[str]:
            return list(await tx.approvals.due(self._clock(), limit))

        return await self._uow.read(due)

    async def next_deadline(self) -> datetime | None:
        return await self._uow.read(lambda tx: tx.approvals.next_deadline())

    def now(self) -> datetime:
        return self._clock()
