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


def remaining(budget: Budget | None, total: Money | None) -> Money | None:
    """What is left of the budget (never negative), or None without a budget."""
    if budget is None:
        return None
    spent = Decimal(0) if total is None or total.currency != budget.limit.currency else total.amount
    return Money(max(budget.limit.amount - spent, Decimal(0)), budget.limit.currency)


def cap_max_cost(
    max_cost: Money | None, budget: Budget | None, total: Money | None
) -> Money | None:
    """A task's cost limit: its own max_cost, lowered to what is left of the budget."""
    left = remaining(budget, total)
    if left is None:
        return max_cost
    if max_cost is None:
        return left
    if max_cost.currency != left.currency:
        return max_cost
    return max_cost if max_cost.amount <= left.amount else left
