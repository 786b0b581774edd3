"""Approvals in SQL (Core, no ORM): rows ↔ aggregates, optimistic concurrency."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping, Select, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_approval.application.commands import Cursor
from trinity_approval.codec import utc
from trinity_approval.domain import Approval, ApprovalStatus, Artifact, Decision, TimeoutAction
from trinity_approval.infrastructure.tables import approval_approvers, approvals
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.errors import Conflict

PENDING = ApprovalStatus.PENDING.value


def normalize_approver(approver: str) -> str:
    return approver.strip().casefold()


def _row(approval: Approval, now: datetime) -> dict[str, Any]:
    interval = approval.reminder_interval
    return {
        "id": approval.id,
        "execution_id": approval.execution_id,
        "step_id": approval.step_id,
        "iteration": approval.iteration,
        "title": approval.title,
        "approvers": json.dumps(list(approval.approvers)),
        "deadline": approval.deadline,
        "on_timeout": approval.on_timeout.value,
        "artifacts": json.dumps(
            [{"name": a.name, "reference": a.reference, "text": a.text} for a in approval.artifacts]
        ),
        "status": approval.status.value,
        "decision": approval.decision.value if approval.decision else None,
        "decided_by": approval.decided_by,
        "comment": approval.comment,
        "decided_at": approval.decided_at,
        "decision_request_id": approval.decision_request_id,
        "reminder_interval_us": None if interval is None else interval // timedelta(microseconds=1),
        "max_reminders": approval.max_reminders,
        "reminders_sent": approval.reminders_sent,
        "cancel_reason": approval.cancel_reason,
        "created_at": approval.created_at,
        "updated_at": now,
        "version": approval.version,
    }


def _approval(row: RowMapping) -> Approval:
    interval_us = row["reminder_interval_us"]
    return Approval(
        id=row["id"],
        execution_id=row["execution_id"],
        step_id=row["step_id"],
        iteration=row["iteration"],
        title=row["title"],
        approvers=tuple(json.loads(row["approvers"])),
        deadline=utc(row["deadline"]),
        on_timeout=TimeoutAction(row["on_timeout"]),
        artifacts=tuple(Artifact(**a) for a in json.loads(row["artifacts"])),
        created_at=utc(row["created_at"]),
        reminder_interval=None if interval_us is None else timedelta(microseconds=interval_us),
        max_reminders=row["max_reminders"],
        status=ApprovalStatus(row["status"]),
        decision=Decision(row["decision"]) if row["decision"] else None,
        decided_by=row["decided_by"],
        comment=row["comment"],
        decided_at=utc(row["decided_at"]) if row["decided_at"] is not None else None,
        decision_request_id=row["decision_request_id"],
        reminders_sent=row["reminders_sent"],
        cancel_reason=row["cancel_reason"],
        version=row["version"],
    )


def _after(time_column: Any, after: Cursor | None) -> Any:
    if after is None:
        return None
    time, approval_id = after
    return or_(time_column > time, and_(time_column == time, approvals.c.id > approval_id))


class SqlApprovalRepository:
    """Works inside the caller's transaction; remembers what it loaded or added
    (``seen``) so the transaction can collect their events."""

    def __init__(self, conn: AsyncConnection, clock: Callable[[], datetime]) -> None:
        self._conn = conn
        self._clock = clock
        self.seen: dict[str, Approval] = {}

    def _track(self, approval: Approval | None) -> Approval | None:
        if approval is not None:
            self.seen[approval.id] = approval
        return approval

    async def _one(self, query: Select[Any]) -> Approval | None:
        row = (await self._conn.execute(query)).mappings().first()
        return self._track(None if row is None else _approval(row))

    async def add(self, approval: Approval) -> None:
        approval.version = 1
        await self._conn.execute(insert(approvals).values(_row(approval, self._clock())))
        await self._conn.execute(
            insert(approval_approvers),
            [
                {"approval_id": approval.id, "approver": normalize_approver(a)}
                for a in approval.approvers
            ],
        )
        self._track(approval)

    async def get(self, approval_id: str) -> Approval | None:
        return await self._one(select(approvals).where(approvals.c.id == approval_id))

    async def get_for_update(
        self, approval_id: str, *, skip_locked: bool = False
    ) -> Approval | None:
        query = select(approvals).where(approvals.c.id == approval_id)
        if self._conn.dialect.name == "postgresql":
            # SQLite needs no row lock: every write transaction begins IMMEDIATE.
            query = query.with_for_update(skip_locked=skip_locked)
        return await self._one(query)

    async def save(self, approval: Approval) -> None:
        values = _row(approval, self._clock())
        values["version"] = approval.version + 1
        del values["id"], values["created_at"]
        result = await self._conn.execute(
            update(approvals)
            .where(approvals.c.id == approval.id, approvals.c.version == approval.version)
            .values(values)
        )
        if result.rowcount != 1:
            metrics.DB_CONFLICTS.labels("approval").inc()
            raise Conflict(
                f"approval {approval.id!r} was changed concurrently",
                metadata={"approval_id": approval.id},
            )
        approval.version += 1
        self._track(approval)

    async def list_pending(
        self, approver: str, after: Cursor | None, limit: int
    ) -> Sequence[Approval]:
        query = select(approvals).where(approvals.c.status == PENDING)
        if approver:
            query = query.join(
                approval_approvers,
                and_(
                    approval_approvers.c.approval_id == approvals.c.id,
                    approval_approvers.c.approver == normalize_approver(approver),
                ),
            )
        condition = _after(approvals.c.deadline, after)
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(approvals.c.deadline, approvals.c.id).limit(limit)
        rows = (await self._conn.execute(query)).mappings().all()
        return [_approval(row) for row in rows]

    async def list_for_execution(
        self, execution_id: str, status: ApprovalStatus | None, after: Cursor | None, limit: int
    ) -> Sequence[Approval]:
        query = select(approvals).where(approvals.c.execution_id == execution_id)
        if status is not None:
            query = query.where(approvals.c.status == status.value)
        condition = _after(approvals.c.created_at, after)
        if condition is not None:
            query = query.where(condition)
        query = query.order_by(approvals.c.created_at, approvals.c.id).limit(limit)
        rows = (await self._conn.execute(query)).mappings().all()
        return [_approval(row) for row in rows]

    async def due(self, now: datetime, limit: int) -> Sequence[str]:
        query = (
            select(approvals.c.id)
            .where(approvals.c.status == PENDING, approvals.c.deadline <= now)
            .order_by(approvals.c.deadline, approvals.c.id)
            .limit(limit)
        )
        return list((await self._conn.execute(query)).scalars().all())

    async def next_deadline(self) -> datetime | None:
        found = await self._conn.scalar(
            select(func.min(approvals.c.deadline)).where(approvals.c.status == PENDING)
        )
        return None if found is None else utc(found)


async def sample_pending(engine: AsyncEngine) -> None:
    """Set the approvals-pending gauge (a metrics sample)."""
    async with read_only(engine) as conn:
        pending = await conn.scalar(
            select(func.count()).select_from(approvals).where(approvals.c.status == PENDING)
        )
    metrics.APPROVALS_PENDING.set(int(pending or 0))
