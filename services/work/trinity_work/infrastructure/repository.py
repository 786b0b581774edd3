"""The WorkRequest repository on SQLAlchemy Core (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_platform import metrics
from trinity_platform.errors import Conflict, FieldViolation, InvalidArgument
from trinity_work.application.commands import ListWork
from trinity_work.application.ports import WorkPage
from trinity_work.domain.errors import WorkNotFound
from trinity_work.domain.model import StepRef, WorkStatus
from trinity_work.domain.work import WorkRequest
from trinity_work.infrastructure import codec
from trinity_work.infrastructure.tables import work_requests as t


def aware(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes (stored in UTC); make them aware again."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _row_values(work: WorkRequest) -> dict[str, Any]:
    return {
        "status": work.status.value,
        "executor_id": work.executor_id,
        "delivery": work.delivery,
        "releases": work.releases,
        "lease_expires_at": work.lease_expires_at,
        "started_at": work.started_at,
        "ended_at": work.ended_at,
        "result": codec.result_to_json(work.result),
        "error": codec.failure_to_json(work.error),
        "cancel_requested": work.cancel_requested,
        "cancel_reason": work.cancel_reason,
        "progress": work.progress,
        "updated_at": datetime.now(UTC),
    }


def _from_row(row: Row[Any]) -> WorkRequest:
    created_at = aware(row.created_at)
    assert created_at is not None
    return WorkRequest(
        id=row.id,
        request_id=row.request_id,
        payload=codec.payload_from_json(row.payload),
        correlation=StepRef(row.execution_id, row.step_id, row.iteration, row.attempt),
        timeout=timedelta(milliseconds=row.timeout_ms),
        max_deliveries=row.max_deliveries,
        created_at=created_at,
        status=WorkStatus(row.status),
        delivery=row.delivery,
        releases=row.releases,
        executor_id=row.executor_id,
        lease_expires_at=aware(row.lease_expires_at),
        started_at=aware(row.started_at),
        ended_at=aware(row.ended_at),
        result=codec.result_from_json(row.result),
        error=codec.failure_from_json(row.error),
        cancel_requested=bool(row.cancel_requested),
        cancel_reason=row.cancel_reason,
        progress=row.progress,
        version=row.version,
    )


def _after(key: tuple[str, str]) -> tuple[datetime, str]:
    try:
        created_at = datetime.fromisoformat(str(key[0]))
        work_id = str(key[1])
    except (ValueError, IndexError, TypeError):
        raise InvalidArgument(
            "invalid page token",
            [FieldViolation("page_token", "is not a token this service issued")],
        ) from None
    return (created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)), work_id


class SqlWorkRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._seen: dict[str, WorkRequest] = {}  # added or saved: their events go out

    def changed(self) -> list[WorkRequest]:
        """The work requests this transaction added or saved."""
        return list(self._seen.values())

    async def add(self, work: WorkRequest) -> None:
        values = _row_values(work)
        values.update(
            id=work.id,
            request_id=work.request_id,
            kind=work.kind.value,
            payload=codec.payload_to_json(work.payload),
            execution_id=work.correlation.execution_id,
            step_id=work.correlation.step_id,
            iteration=work.correlation.iteration,
            attempt=work.correlation.attempt,
            timeout_ms=int(work.timeout / timedelta(milliseconds=1)),
            max_deliveries=work.max_deliveries,
            created_at=work.created_at,
            version=1,
        )
        try:
            await self._conn.execute(insert(t).values(values))
        except IntegrityError as exc:
            raise Conflict(f"work request {work.request_id!r} was created concurrently") from exc
        work.version = 1
        self._seen[work.id] = work

    async def get(self, work_id: str, *, for_update: bool = False) -> WorkRequest:
        stmt = select(t).where(t.c.id == work_id)
        if for_update and self._conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            raise WorkNotFound(work_id)
        return _from_row(row)

    async def save(self, work: WorkRequest) -> None:
        result = await self._conn.execute(
            update(t)
            .where(t.c.id == work.id, t.c.version == work.version)
            .values(version=work.version + 1, **_row_values(work))
        )
        if result.rowcount != 1:
            metrics.DB_CONFLICTS.labels("work").inc()
            raise Conflict(
                f"work {work.id} was modified concurrently", metadata={"work_id": work.id}
            )
        work.version += 1
        self._seen[work.id] = work

    async def list(self, query: ListWork) -> WorkPage:
        stmt = select(t)
        if query.execution_id:
            stmt = stmt.where(t.c.execution_id == query.execution_id)
        if query.status is not None:
            stmt = stmt.where(t.c.status == query.status.value)
        if query.kind is not None:
            stmt = stmt.where(t.c.kind == query.kind.value)
        if query.after is not None:
            created_at, work_id = _after(query.after)
            stmt = stmt.where(
                or_(
                    t.c.created_at < created_at,
                    and_(t.c.created_at == created_at, t.c.id < work_id),
                )
            )
        stmt = stmt.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(query.page_size + 1)
        rows = (await self._conn.execute(stmt)).all()
        items = [_from_row(row) for row in rows[: query.page_size]]
        return WorkPage(items, has_more=len(rows) > query.page_size)

    async def lease_expired(self, now: datetime, limit: int) -> Sequence[str]:
        stmt = (
            select(t.c.id)
            .where(t.c.status == WorkStatus.STARTED.value, t.c.lease_expires_at <= now)
            .order_by(t.c.lease_expires_at)
            .limit(limit)
        )
        if self._conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return list((await self._conn.execute(stmt)).scalars())
