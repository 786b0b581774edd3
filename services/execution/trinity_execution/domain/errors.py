"""Domain errors and the stable failure codes the engine records."""

from __future__ import annotations

from dataclasses import dataclass, field


class ExecutionDomainError(Exception):
    """Base of the execution domain's errors."""


class InvalidTransition(ExecutionDomainError):
    """A status change the lifecycle does not allow."""


class UnknownStep(ExecutionDomainError):
    """An event named a step the definition does not have."""


@dataclass(frozen=True)
class Failure:
    """Why something failed: a stable UPPER_SNAKE code and a human explanation."""

    code: str
    message: str = ""
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"code": self.code, "message": self.message}
        if self.details:
            data["details"] = dict(self.details)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Failure:
        details = data.get("details") or {}
        assert isinstance(details, dict)
        return cls(str(data["code"]), str(data.get("message", "")), dict(details))


# Failure codes the engine itself produces (work and approval codes pass through).
TIMEOUT = "TIMEOUT"
EXPRESSION_ERROR = "EXPRESSION_ERROR"
EXPRESSION_LIMIT_EXCEEDED = "EXPRESSION_LIMIT_EXCEEDED"
"""A template or condition went past a limit on its work (invariant 8)."""
NO_MATCHING_ROUTE = "NO_MATCHING_ROUTE"
LOOP_LIMIT_REACHED = "LOOP_LIMIT_REACHED"
BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
CANCELLED = "CANCELLED"
LOOP_RESTARTED = "LOOP_RESTARTED"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
INVALID_TIMER = "INVALID_TIMER"
CHILD_EXECUTION_FAILED = "CHILD_EXECUTION_FAILED"
"""The child execution of a sub_process step failed or was cancelled."""
FOR_EACH_ITEM_FAILED = "FOR_EACH_ITEM_FAILED"
"""More items of an agent_task or tool_run for_each failed than it tolerates."""
FOR_EACH_TOO_MANY_ITEMS = "FOR_EACH_TOO_MANY_ITEMS"
"""A for_each's list is longer than its max_items."""
EXECUTION_DEPTH_EXCEEDED = "EXECUTION_DEPTH_EXCEEDED"
"""A sub_process step would start a child deeper than the depth limit."""
COMPENSATION_FAILED = "COMPENSATION_FAILED"
"""A compensation failed for good (what a parent's sub_process step sees)."""
APPROVAL_REJECTED = "APPROVAL_REJECTED"
"""An approver (or on_timeout: reject) rejected a step without on_reject: continue."""

CREDENTIALS_MISSING = "CREDENTIALS_MISSING"
"""An executor lacks a credential (work failure code): retrying cannot produce it."""

NON_RETRYABLE = frozenset(
    {
        EXPRESSION_ERROR,
        EXPRESSION_LIMIT_EXCEEDED,
        NO_MATCHING_ROUTE,
        LOOP_LIMIT_REACHED,
        CURRENCY_MISMATCH,
        INVALID_TIMER,
        CREDENTIALS_MISSING,
        APPROVAL_REJECTED,
        FOR_EACH_TOO_MANY_ITEMS,
    }
)
"""Codes that never get another attempt, whatever the retry policy says."""


def expression_failure(step_id: str, field: str, exc: Exception) -> Failure:
    """A template or condition of `step_id`'s `field` failed: EXPRESSION_LIMIT_EXCEEDED
    naming the limit when it ran out of its budget, else EXPRESSION_ERROR."""
    details = {"step_id": step_id, "field": field}
    limit = getattr(exc, "limit", "")
    if limit:
        return Failure(
            EXPRESSION_LIMIT_EXCEEDED,
            f"{field} of step {step_id!r} went past the {limit} limit: {exc}",
            {**details, "limit": str(limit)},
        )
    return Failure(EXPRESSION_ERROR, f"{field} of step {step_id!r}: {exc}", details)


class FieldExpressionError(Exception):
    """A template of one field of a step failed to render (carries which field)."""

    def __init__(self, field: str, cause: Exception) -> None:
        super().__init__(f"{field}: {cause}")
        self.field = field
        self.cause = cause

    def failure(self, step_id: str) -> Failure:
        return expression_failure(step_id, self.field, self.cause)
