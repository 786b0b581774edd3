"""The inputs of the handlers: one frozen value per command or query."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from trinity_work.domain.model import Failure, Payload, StepRef, WorkKind, WorkResult, WorkStatus


@dataclass(frozen=True)
class RequestWork:
    request_id: str
    payload: Payload
    correlation: StepRef = field(default_factory=StepRef)
    timeout: timedelta | None = None
    max_deliveries: int | None = None


@dataclass(frozen=True)
class RecordWorkStarted:
    request_id: str
    work_id: str
    executor_id: str
    delivery: int = 0
    lease: timedelta | None = None


@dataclass(frozen=True)
class HeartbeatWork:
    work_id: str
    executor_id: str
    lease: timedelta | None = None
    progress: str = ""
    release: bool = False


@dataclass(frozen=True)
class RecordWorkCompleted:
    request_id: str
    work_id: str
    executor_id: str
    result: WorkResult
    # The delivery whose start is recorded with the result (None: recorded before).
    started_delivery: int | None = None


@dataclass(frozen=True)
class RecordWorkFailed:
    request_id: str
    work_id: str
    executor_id: str
    failure: Failure


@dataclass(frozen=True)
class CancelWork:
    request_id: str
    work_id: str
    reason: str = ""


@dataclass(frozen=True)
class ListWork:
    execution_id: str = ""
    status: WorkStatus | None = None
    kind: WorkKind | None = None
    page_size: int = 50
    after: tuple[str, str] | None = (
        None  # (created_at ISO 8601, id) of the last item before this page
    )
