"""Cost totals and the budget thresholds, with exact decimals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from trinity_process_model.model import Budget, Money

WARNING_RATIO = Decimal("0.8")


@dataclass(frozen=True)
class BudgetCheck:
    warn: bool
    """The total reached 80% of the limit for the first time."""
    exceed: bool
    """The total reached the limit for the first time."""


def check_budget(budget: Budget | None, total: Money, warned: bool, exceeded: bool) -> BudgetCheck:
    """Which budget facts the new `total` calls for (each at most once per execution)."""
    if budget is None or total.currency != budget.limit.currency:
        return BudgetCheck(False, False)
    limit = budget.limit.amount
    warn = not warned and total.amount >= limit * WARNING_RATIO
    exceed = not exceeded and total.amount >= limit
    return BudgetCheck(warn, exceed)
