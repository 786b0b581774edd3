"""The WorkRequest repository on SQLAlchemy Core (SQLite and PostgreSQL); rows and
their JSON columns (payload, result, failure) <-> the aggregate."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_platform import metrics
from trinity_platform.errors import Conflict, FieldViolation, InvalidArgument
from trinity_platform.statements import PerDialect
from trinity_work.application.commands import ListWork
from trinity_work.application.ports import WorkPage
from trinity_work.domain.errors import WorkNotFound
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
    WorkResult,
    WorkStatus,
)
from trinity_work.domain.work import WorkRequest
from trinity_work.infrastructure.tables import work_requests as t

# ------------------------------------------------------------------ JSON columns


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def money_to_dict(money: Money | None) -> dict[str, str] | None:
    if money is None:
        return None
    return {"amount": str(money.amount), "currency": money.currency}


def money_from_dict(data: dict[str, str] | None) -> Money | None:
    if not data:
        return None
    return Money(Decimal(data["amount"]), data["currency"])


def payload_to_json(payload: Payload) -> str:
    if isinstance(payload, AgentTask):
        data: dict[str, Any] = {
            "agent_task": {
                "agent": payload.agent,
                "message": payload.message,
                "max_cost": money_to_dict(payload.max_cost),
            }
        }
    elif isinstance(payload, ToolRun):
        data = {"tool_run": {"action": payload.action.value, "arguments": dict(payload.arguments)}}
    else:
        data = {
            "notification": {
                "channel": payload.channel.value,
                "target": payload.target,
                "subject": payload.subject,
                "message": payload.message,
            }
        }
    return _dumps(data)


def payload_from_json(raw: str) -> Payload:
    data = json.loads(raw)
    if "agent_task" in data:
        item = data["agent_task"]
        return AgentTask(item["agent"], item["message"], money_from_dict(item.get("max_cost")))
    if "tool_run" in data:
        item = data["tool_run"]
        return ToolRun(ActionKind(item["action"]), dict(item.get("arguments") or {}))
    item = data["notification"]
    return Notification(Channel(item["channel"]), item["target"], item["subject"], item["message"])


def result_to_json(result: WorkResult | None) -> str | None:
    if result is None:
        return None
    return _dumps(
        {
            "output": result.output,
            "structured_output": (
                dict(result.structured_output) if result.structured_output is not None else None
            ),
            "cost": money_to_dict(result.cost),
            "context_used": result.context_used,
            "evidence": [
                {"kind": e.kind.value, "name": e.name, "uri": e.uri, "text": e.text}
                for e in result.evidence
            ],
        }
    )


def result_from_json(raw: str | None) -> WorkResult | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return WorkResult(
        output=data["output"],
        structured_output=data.get("structured_output"),
        cost=money_from_dict(data.get("cost")),
        context_used=int(data.get("context_used") or 0),
        evidence=tuple(
            Evidence(EvidenceKind(e["kind"]), e["name"], e["uri"], e["text"])
            for e in data.get("evidence") or ()
        ),
    )


def failure_to_json(failure: Failure | None) -> str | None:
    if failure is None:
        return None
    return _dumps(
        {"code": failure.code, "message": failure.message, "details": dict(failure.details)}
    )


def failure_from_json(raw: str | None) -> Failure | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return Failure(data["code"], data["message"], dict(data.get("details") or {}))


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
        "result": result_to_json(work.result),
        "error": failure_to_json(work.error),
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
        payload=payload_from_json(row.payload),
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
        result=result_from_json(row.result),
        error=failure_from_json(row.error),
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


# The hot path's statements, built once (see trinity_platform.statements).
_INSERT = insert(t)
_BY_ID = select(t).where(t.c.id == bindparam("work_id"))
_BY_ID_FOR_UPDATE = PerDialect(
    lambda dialect: _BY_ID.with_for_update() if dialect == "postgresql" else _BY_ID
)
_UPDATE = update(t).where(
    t.c.id == bindparam("work_id"), t.c.version == bindparam("expected_version")
)
_LEASE_EXPIRED = (
    select(t.c.id)
    .where(t.c.status == WorkStatus.STARTED.value, t.c.lease_expires_at <= bindparam("now"))
    .order_by(t.c.lease_expires_at)
    .limit(bindparam("limit"))
)
_LEASE_EXPIRED_CLAIMED = PerDialect(
    lambda dialect: (
        _LEASE_EXPIRED.with_for_update(skip_locked=True)
        if dialect == "postgresql"
        else _LEASE_EXPIRED
    )
)


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
            payload=payload_to_json(work.payload),
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
            await self._conn.execute(_INSERT, values)
        except IntegrityError as exc:
            raise Conflict(f"work request {work.request_id!r} was created concurrently") from exc
        work.version = 1
        self._seen[work.id] = work

    async def get(self, work_id: str, *, for_update: bool = False) -> WorkRequest:
        stmt = _BY_ID_FOR_UPDATE(self._conn) if for_update else _BY_ID
        row = (await self._conn.execute(stmt, {"work_id": work_id})).first()
        if row is None:
            raise WorkNotFound(work_id)
        return _from_row(row)

    async def save(self, work: WorkRequest) -> None:
        values = _row_values(work)
        values.update(work_id=work.id, expected_version=work.version, version=work.version + 1)
        result = await self._conn.execute(_UPDATE, values)
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
        result = await self._conn.execute(
            _LEASE_EXPIRED_CLAIMED(self._conn), {"now": now, "limit": limit}
        )
        return list(result.scalars())
