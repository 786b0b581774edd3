"""What an executor works on, and how a backend says it failed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trinity_work.domain.model import Failure, Payload, StepRef, WorkKind


@dataclass(frozen=True)
class Job:
    """One delivery of one work request, as the executor received it from the queue."""

    work_id: str
    kind: WorkKind
    payload: Payload
    correlation: StepRef
    delivery: int
    timeout: float  # seconds this delivery may run


class JobFailed(Exception):
    """A backend could not do the work; ``code`` is a stable UPPER_SNAKE failure code."""

    def __init__(self, code: str, message: str, details: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: dict[str, str] = dict(details or {})

    def failure(self) -> Failure:
        return Failure(self.code, self.message, self.details)
