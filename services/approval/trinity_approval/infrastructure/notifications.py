"""Notifications to approvers, as work requests of kind notification.

This service never sends mail itself. When an approval is requested, and at each
reminder (on_timeout NOTIFY), the unit of work writes one ``dispatches`` row per
approver — in the transaction of the change — holding a serialized
``RequestWorkRequest`` whose idempotency key is
``approval/<approval id>/<request|reminder-N>/<approver hash>``. The
:class:`WorkNotificationSender` delivers them to ``WorkService/RequestWork`` and
retries with capped backoff until the work service accepts (or refuses for good).
When an approval stops being pending, its unsent notifications become obsolete.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
from sqlalchemy import RowMapping, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity.process.common.v1 import enums_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_approval.domain import (
    Approval,
    ApprovalEvent,
    ApprovalRequested,
    ApprovalTimedOut,
)
from trinity_approval.infrastructure.tables import dispatches
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

PENDING, DONE, FAILED, OBSOLETE = "pending", "done", "failed", "obsolete"

# Refusals that a retry cannot fix: the dispatch is marked failed.
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
MAX_ARTIFACT_TEXT = 2000
MAX_SUBJECT_TITLE = 200


@dataclass(frozen=True)
class NotificationPolicy:
    """How an approver is reached. Email addresses get CHANNEL_EMAIL; other principal
    names get ``principal_channel`` with ``principal_target`` (None: not notified)."""

    principal_channel: int | None = enums_pb2.CHANNEL_FILE
    principal_target: str = "approvals.jsonl"

    def route(self, approver: str) -> tuple[int, str] | None:
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
    approval: Approval, approver: str, purpose: str, channel: int, target: str
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
                channel=channel,  # type: ignore[arg-type]
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


def backoff_seconds(attempts: int, maximum: float) -> float:
    return float(min(0.2 * 2 ** max(attempts - 1, 0), maximum))


class WorkNotificationSender:
    """Delivers pending dispatches to the work service.

    Rows are claimed with a lease (``next_attempt_at`` pushed forward; ``SKIP
    LOCKED`` on PostgreSQL), so replicas share the load; a row sent twice (a
    replica died after sending) is harmless thanks to the idempotency key.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        stub: WorkServiceStub | None = None,
        *,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        concurrency: int = 16,
        call_timeout: float = 10.0,
        max_backoff: float = 30.0,
        lease: float = 60.0,
        metadata: Sequence[tuple[str, str]] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._clock = clock
        self.stub = stub
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._limit = asyncio.Semaphore(concurrency)
        self._call_timeout = call_timeout
        self._max_backoff = max_backoff
        self._lease = timedelta(seconds=lease)
        self._metadata = tuple(metadata)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Send until cancelled (a runtime background task)."""
        while True:
            try:
                claimed = await self.send_once()
            except Exception:
                _log.exception("notification round failed")
                claimed = 0
            if claimed >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def send_once(self) -> int:
        """Claim due rows and send them; returns how many were claimed."""
        rows = await self._claim()
        if rows:
            await asyncio.gather(*(self._send(row) for row in rows))
        return len(rows)

    async def _claim(self) -> list[RowMapping]:
        now = self._clock()
        async with self._engine.begin() as conn:
            query = (
                select(dispatches)
                .where(dispatches.c.status == PENDING, dispatches.c.next_attempt_at <= now)
                .order_by(dispatches.c.next_attempt_at, dispatches.c.id)
                .limit(self._batch_size)
            )
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list((await conn.execute(query)).mappings().all())
            if rows:
                await conn.execute(
                    update(dispatches)
                    .where(dispatches.c.id.in_([row["id"] for row in rows]))
                    .values(next_attempt_at=now + self._lease)
                )
        return rows

    async def _send(self, row: RowMapping) -> None:
        attempts = int(row["attempts"]) + 1
        request = work_service_pb2.RequestWorkRequest.FromString(bytes(row["payload"]))
        async with self._limit:
            try:
                if self.stub is None:
                    raise RuntimeError("no channel to the work service yet")
                reply = await self.stub.RequestWork(
                    request, timeout=self._call_timeout, metadata=self._metadata or None
                )
            except grpc.aio.AioRpcError as error:
                message = f"{error.code().name}: {error.details()}"
                if error.code() in PERMANENT_CODES:
                    _log.error("work refused a notification", key=row["key"], error=message)
                    await self._finish(row, attempts, FAILED, error=message)
                else:
                    await self._retry_later(row, attempts, message)
                return
            except Exception as error:
                await self._retry_later(row, attempts, repr(error))
                return
        await self._finish(row, attempts, DONE, work_id=reply.work.id)

    async def _finish(
        self,
        row: RowMapping,
        attempts: int,
        status: str,
        *,
        work_id: str | None = None,
        error: str | None = None,
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.id == row["id"], dispatches.c.status == PENDING)
                .values(status=status, attempts=attempts, work_id=work_id, last_error=error)
            )

    async def _retry_later(self, row: RowMapping, attempts: int, error: str) -> None:
        delay = backoff_seconds(attempts, self._max_backoff)
        log = _log.warning if attempts in (1, 10) or attempts % 100 == 0 else _log.debug
        log("notification will be retried", key=row["key"], attempts=attempts, error=error)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(dispatches)
                .where(dispatches.c.id == row["id"], dispatches.c.status == PENDING)
                .values(
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=self._clock() + timedelta(seconds=delay),
                )
            )
