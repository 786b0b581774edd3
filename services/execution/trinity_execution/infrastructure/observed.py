"""The execution service's metrics: counted from the facts a decision committed, and
sampled from the database (executions by status, timers due, commands waiting)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_execution.domain import facts as f
from trinity_execution.infrastructure.tables import dispatches, executions, timers
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.metrics import Sample
from trinity_process_model.model import Step

_ACTIVE = ("pending", "running", "paused", "compensating")
_dispatch_kinds = {"request_work", "request_approval", "cancel_work", "cancel_approval"}


def observe_facts(facts: Iterable[f.Fact], steps: Mapping[str, Step]) -> None:
    """Count what committed facts report (called after the commit)."""
    for fact in facts:
        match fact:
            case f.StepStarted():
                metrics.STEPS_STARTED.labels(str(fact.kind)).inc()
            case f.StepCompleted():
                kind = _kind(steps, fact.step_id)
                metrics.STEPS_COMPLETED.labels(kind).inc()
                metrics.STEP_SECONDS.labels(kind).observe(fact.duration.total_seconds())
            case f.StepFailed():
                metrics.STEPS_FAILED.labels(_kind(steps, fact.step_id)).inc()
            case f.ProcessStarted():
                metrics.EXECUTIONS_STARTED.inc()
            case f.ProcessCompleted():
                metrics.EXECUTIONS_FINISHED.labels("completed").inc()
            case f.ProcessFailed():
                metrics.EXECUTIONS_FINISHED.labels("failed").inc()
            case f.ProcessCancelled():
                metrics.EXECUTIONS_FINISHED.labels("cancelled").inc()
            case f.CompensationFailed():
                metrics.EXECUTIONS_FINISHED.labels("compensation_failed").inc()
            case f.BudgetWarning():
                metrics.BUDGET_WARNINGS.inc()
            case f.BudgetExceeded():
                metrics.BUDGET_EXCEEDED.inc()
            case _:
                pass


def _kind(steps: Mapping[str, Step], step_id: str) -> str:
    step = steps.get(step_id)
    return str(step.kind) if step is not None else "unknown"


def samples(engine: AsyncEngine) -> list[Sample]:
    async def executions_by_status() -> None:
        async with read_only(engine) as conn:
            rows = await conn.execute(
                select(executions.c.status, func.count())
                .where(executions.c.status.in_(_ACTIVE))
                .group_by(executions.c.status)
            )
            counts: dict[str, int] = dict(rows.tuples().all())
        for status in _ACTIVE:
            metrics.EXECUTIONS.labels(status).set(counts.get(status, 0))

    async def timers_due() -> None:
        async with read_only(engine) as conn:
            due = await conn.scalar(
                select(func.count())
                .select_from(timers)
                .where(timers.c.status == "pending", timers.c.fire_at <= datetime.now(UTC))
            )
        metrics.TIMERS_DUE.set(int(due or 0))

    async def dispatch_backlog() -> None:
        async with read_only(engine) as conn:
            rows = await conn.execute(
                select(dispatches.c.kind, func.count())
                .where(dispatches.c.status == "pending")
                .group_by(dispatches.c.kind)
            )
            counts: dict[str, int] = dict(rows.tuples().all())
        # Every kind seen once keeps its series (back to 0 when drained).
        _dispatch_kinds.update(counts)
        for kind in _dispatch_kinds:
            metrics.DISPATCH_BACKLOG.labels(kind).set(counts.get(kind, 0))

    return [executions_by_status, timers_due, dispatch_backlog]
