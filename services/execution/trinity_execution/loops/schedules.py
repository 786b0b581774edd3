"""Schedule triggers: start an execution at each fire time of a cron expression.

Each fire time starts one execution, whatever the number of replicas: the
trigger's idempotency key carries the fire time, and the schedule moves on by
compare-and-set. Fire times missed while the service was down are, by
configuration, fired once on recovery (the default), all fired, or skipped.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from trinity_execution import domain as d
from trinity_execution.application.commands import ExecutionCommands
from trinity_execution.infrastructure.transactions import ExecutionSqlUnitOfWork
from trinity_execution.infrastructure.trigger_store import (
    TriggerRow,
    advance_schedule,
    due_schedules,
)
from trinity_execution.loops import trigger_start
from trinity_platform.errors import ResourceExhausted, TrinityError, Unavailable
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

MAX_CATCH_UP = 100
"""With MissedFires.ALL, at most this many missed fire times are fired in one round."""


class MissedFires(StrEnum):
    ONCE = "once"
    ALL = "all"
    SKIP = "skip"


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def next_fire_time(cron: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, evaluated in the schedule's timezone."""
    local = as_utc(after).astimezone(ZoneInfo(timezone or "UTC"))
    return as_utc(croniter(cron, local).get_next(datetime))


def fire_times(
    row: TriggerRow, now: datetime, missed: MissedFires, grace: timedelta
) -> tuple[list[datetime], datetime]:
    """(fire times to start now, the schedule's next fire time afterwards)."""
    assert row.next_fire_at is not None
    due = as_utc(row.next_fire_at)
    if missed is MissedFires.ALL:
        times: list[datetime] = []
        while due <= now and len(times) < MAX_CATCH_UP:
            times.append(due)
            due = next_fire_time(row.cron, row.timezone, due)
        return times, due
    following = next_fire_time(row.cron, row.timezone, now)
    if missed is MissedFires.SKIP and now - due > grace:
        return [], following
    return [due], following


class Scheduler:
    def __init__(
        self,
        uow: ExecutionSqlUnitOfWork,
        commands: ExecutionCommands[Any],
        *,
        missed: MissedFires = MissedFires.ONCE,
        poll_interval: float = 1.0,
    ) -> None:
        self._uow = uow
        self._commands = commands
        self._missed = missed
        self._poll_interval = poll_interval

    async def run(self) -> None:
        while True:
            await self.fire_due()
            await asyncio.sleep(self._poll_interval)

    async def fire_due(self) -> int:
        now = datetime.now(UTC)
        rows = await self._uow.read(lambda tx: due_schedules(tx.conn, now))
        started = 0
        for row in rows:
            times, following = fire_times(
                row, now, self._missed, timedelta(seconds=max(self._poll_interval * 5, 60))
            )
            try:
                for fire_at in times:
                    await self._start(row, fire_at)
                    started += 1
            except (Unavailable, ResourceExhausted) as error:
                # Down or at the admission bound: fire at the next poll, not never.
                _log.warning("schedule deferred", process=row.process_name, error=error.message)
                continue
            await self._advance(row, following)
        return started

    async def _advance(self, row: TriggerRow, following: datetime) -> None:
        """Move the schedule on to ``following`` (compare-and-set: once across replicas)."""
        await self._uow.write(lambda tx: advance_schedule(tx.conn, row, following))

    async def _start(self, row: TriggerRow, fire_at: datetime) -> None:
        key = f"schedule/{row.definition_id}/{row.position}/{fire_at.isoformat()}"
        try:
            await trigger_start.start(
                self._commands,
                row,
                key=key,
                data=row.input,
                triggered_by=f"schedule:{row.cron}",
                kind=d.TriggerKind.SCHEDULE,
            )
        except (Unavailable, ResourceExhausted):
            raise
        except TrinityError as error:
            # An archived version or a refused input will not get better by waiting.
            _log.warning("scheduled start refused", process=row.process_name, error=error.message)
