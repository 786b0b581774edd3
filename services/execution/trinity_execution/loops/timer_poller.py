"""Fires durable timers (timer steps, step timeouts, retry backoffs) when they are due.

Timers are rows written in the decision that started them, so they survive a
restart; a timer that came due while the service was down fires on start. The
poller only finds due rows; firing happens in the continuation's transaction,
which marks the row fired only if it was still pending, so a timer fires once
even with several replicas polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_execution.infrastructure.tables import timers
from trinity_platform import metrics
from trinity_platform.db import read_only
from trinity_platform.logs import get_logger
from trinity_platform.telemetry import span

_log = get_logger(__name__)

# Fires one timer: (execution_id, timer_id) -> None. It must claim the timer in its
# transaction (infrastructure.timer_store.claim_timer), so it fires once.
FireTimer = Callable[[str, str], Awaitable[None]]


class TimerPoller:
    def __init__(
        self,
        engine: AsyncEngine,
        fire: FireTimer,
        *,
        poll_interval: float = 0.25,
        batch_size: int = 200,
    ) -> None:
        self._engine = engine
        self._fire = fire
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timer-poller")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                fired = await self.fire_due()
            except Exception:
                _log.exception("timer round failed")
                fired = 0
            if fired >= self._batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_interval)

    async def fire_due(self) -> int:
        async with read_only(self._engine) as conn:
            due = (
                await conn.execute(
                    select(
                        timers.c.id, timers.c.execution_id, timers.c.fire_at, timers.c.traceparent
                    )
                    .where(timers.c.status == "pending", timers.c.fire_at <= datetime.now(UTC))
                    .order_by(timers.c.fire_at)
                    .limit(self._batch_size)
                )
            ).all()
        for timer_id, execution_id, fire_at, traceparent in due:
            try:
                with span("timer fired", traceparent):  # the trace of the decision that set it
                    await self._fire(execution_id, timer_id)
                metrics.TIMER_LATENESS.observe(_seconds_since(fire_at))
            except Exception:
                _log.exception("timer failed to fire; will retry", timer_id=timer_id)
        return len(due)


def _seconds_since(time: datetime) -> float:
    aware = time if time.tzinfo is not None else time.replace(tzinfo=UTC)
    return max((datetime.now(UTC) - aware).total_seconds(), 0.0)
