"""What happened to a WorkRequest; the unit of work turns each into a fact or an intent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trinity_work.domain.model import Failure, WorkResult


@dataclass(frozen=True)
class WorkRequested:
    at: datetime


@dataclass(frozen=True)
class ExecutionRequested:
    """The work is offered to the executors (first delivery, or again after a lost lease)."""

    delivery: int
    at: datetime


@dataclass(frozen=True)
class WorkStarted:
    executor_id: str
    delivery: int
    at: datetime


@dataclass(frozen=True)
class WorkCompleted:
    result: WorkResult
    at: datetime


@dataclass(frozen=True)
class WorkFailed:
    failure: Failure
    at: datetime


@dataclass(frozen=True)
class WorkCancelled:
    reason: str
    at: datetime


WorkEvent = (
    WorkRequested | ExecutionRequested | WorkStarted | WorkCompleted | WorkFailed | WorkCancelled
)
