"""Whether a failed attempt gets another, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from trinity_execution.domain.errors import NON_RETRYABLE
from trinity_process_model.model import RetryPolicy


@dataclass(frozen=True)
class RetryPlan:
    will_retry: bool
    next_attempt_time: datetime | None = None


def plan_retry(policy: RetryPolicy, attempt_in_series: int, code: str, now: datetime) -> RetryPlan:
    """The plan after attempt number `attempt_in_series` (1-based) failed with `code`.

    The engine's own codes in NON_RETRYABLE never retry; the policy's
    non_retryable_codes and max_attempts apply to everything else.
    """
    if code in NON_RETRYABLE or not policy.allows_retry(attempt_in_series, code):
        return RetryPlan(False)
    return RetryPlan(True, now + policy.backoff_before(attempt_in_series + 1))
