"""Domain errors of the work context. Each has a stable reason clients can switch on."""

from __future__ import annotations

from trinity_platform.errors import FailedPrecondition, InvalidArgument, NotFound


class WorkNotFound(NotFound):
    default_reason = "WORK_NOT_FOUND"

    def __init__(self, work_id: str) -> None:
        super().__init__(f"work {work_id!r} not found", metadata={"work_id": work_id})


class WorkFinished(FailedPrecondition):
    """The work already reached a final status; nothing can change it any more."""

    default_reason = "WORK_FINISHED"


class WorkLeasedElsewhere(FailedPrecondition):
    """Another executor holds a live lease on the work."""

    default_reason = "WORK_LEASED_ELSEWHERE"


class StaleDelivery(FailedPrecondition):
    """The executor received an older delivery of work that was offered again since."""

    default_reason = "STALE_DELIVERY"


class WorkNotLeased(FailedPrecondition):
    """The caller does not hold the lease of the work (it expired and was re-offered,
    or the work was never started by this executor)."""

    default_reason = "WORK_NOT_LEASED"


class InvalidWork(InvalidArgument):
    """A value object was built from invalid data."""


__all__ = [
    "InvalidWork",
    "StaleDelivery",
    "WorkFinished",
    "WorkLeasedElsewhere",
    "WorkNotFound",
    "WorkNotLeased",
]
