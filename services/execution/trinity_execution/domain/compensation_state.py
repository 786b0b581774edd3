"""The state of an execution's compensation: which completions it undoes, in which order,
and how far each one is (pure data; the decisions are in ``compensation.py``).

Bounded like the rest of the state (invariant 9): one small entry per completion of a
step that declares ``compensate`` (loops are bounded by their ``max_iterations``), and a
compensation's output is cut to ``OUTPUT_LIMIT`` characters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from trinity_execution.domain.errors import Failure

OUTPUT_LIMIT = 2_000
"""Characters of a compensation's output kept in the state (the fact carries it all)."""


class CompensationReason(StrEnum):
    FAILURE = "failure"
    CANCELLATION = "cancellation"


class StepCompensationStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    """Waiting for a retry backoff."""
    COMPENSATED = "compensated"
    FAILED = "failed"


@dataclass(slots=True)
class StepCompensation:
    """The compensation of one completion: a step in one iteration."""

    step_id: str
    iteration: int
    status: StepCompensationStatus = StepCompensationStatus.PENDING
    attempt: int = 0
    error: Failure | None = None
    next_attempt_time: datetime | None = None
    output: str = ""

    def clone(self) -> StepCompensation:
        return StepCompensation(
            self.step_id,
            self.iteration,
            self.status,
            self.attempt,
            self.error,
            self.next_attempt_time,
            self.output,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "step_id": self.step_id,
            "iteration": self.iteration,
            "status": str(self.status),
        }
        if self.attempt:
            data["attempt"] = self.attempt
        if self.error is not None:
            data["error"] = self.error.to_dict()
        if self.next_attempt_time is not None:
            data["next_attempt_time"] = self.next_attempt_time.isoformat()
        if self.output:
            data["output"] = self.output
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepCompensation:
        when = data.get("next_attempt_time")
        return cls(
            step_id=str(data["step_id"]),
            iteration=int(data["iteration"]),
            status=StepCompensationStatus(data.get("status", "pending")),
            attempt=int(data.get("attempt", 0)),
            error=Failure.from_dict(data["error"]) if data.get("error") else None,
            next_attempt_time=None if when is None else datetime.fromisoformat(when),
            output=str(data.get("output", "")),
        )


@dataclass(slots=True)
class CompensationState:
    """Why the execution compensates and each completion's compensation, in running
    order (the reverse order of completion). ``current`` indexes the one running or
    next; ``request`` and ``timer`` are its outstanding work request and retry timer."""

    reason: CompensationReason
    steps: list[StepCompensation] = field(default_factory=list)
    current: int = 0
    request: str = ""
    timer: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    failed_step_id: str = ""

    @property
    def entry(self) -> StepCompensation | None:
        """The compensation running or next, None once all ran (or one failed)."""
        return self.steps[self.current] if self.current < len(self.steps) else None

    def clone(self) -> CompensationState:
        return CompensationState(
            self.reason,
            [s.clone() for s in self.steps],
            self.current,
            self.request,
            self.timer,
            self.started_at,
            self.ended_at,
            self.failed_step_id,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "reason": str(self.reason),
            "steps": [s.to_dict() for s in self.steps],
            "current": self.current,
        }
        for name in ("request", "timer", "failed_step_id"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        for name in ("started_at", "ended_at"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompensationState:
        started, ended = data.get("started_at"), data.get("ended_at")
        return cls(
            reason=CompensationReason(data["reason"]),
            steps=[StepCompensation.from_dict(s) for s in data.get("steps", ())],
            current=int(data.get("current", 0)),
            request=str(data.get("request", "")),
            timer=str(data.get("timer", "")),
            started_at=None if started is None else datetime.fromisoformat(started),
            ended_at=None if ended is None else datetime.fromisoformat(ended),
            failed_step_id=str(data.get("failed_step_id", "")),
        )
