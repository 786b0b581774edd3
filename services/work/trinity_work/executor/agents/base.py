"""The port every agent backend implements."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from trinity_work.domain.model import AgentTask, Money, WorkResult
from trinity_work.executor.jobs import Job, JobFailed


class AgentBackend(Protocol):
    async def run(self, task: AgentTask, job: Job) -> WorkResult:
        """Do the task; raise :class:`JobFailed` with a stable code when it cannot."""
        ...

    async def close(self) -> None: ...


def currency_of(task: AgentTask) -> str:
    return task.max_cost.currency if task.max_cost is not None else "USD"


def parse_cost(value: Any, default_currency: str) -> Money | None:
    """A cost from a backend: ``"0.12"``, ``0.12``, ``{"amount": "0.12", "currency": "EUR"}``
    or ``{"units": 0, "nanos": 120000000, "currency_code": "EUR"}``. Never a float inside."""
    if value is None:
        return None
    try:
        if isinstance(value, dict):
            currency = str(value.get("currency") or value.get("currency_code") or default_currency)
            if "amount" in value:
                return Money(Decimal(str(value["amount"])), currency)
            units = int(value.get("units", 0))
            nanos = int(value.get("nanos", 0))
            return Money(Decimal(units) + Decimal(nanos) / Decimal(1_000_000_000), currency)
        if isinstance(value, bool):
            raise ValueError("a boolean is not a cost")
        return Money(Decimal(str(value)), default_currency)
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise JobFailed(
            "AGENT_ERROR", f"the agent reported an invalid cost {value!r}: {exc}"
        ) from None


def check_budget(task: AgentTask, cost: Money | None) -> None:
    """An agent that spent more than the task's ``max_cost`` fails with BUDGET_EXCEEDED.

    The money was spent all the same: the failure's details carry it (``cost`` and
    ``cost_currency``), and the execution counts it in its total."""
    if cost is None or task.max_cost is None:
        return
    if cost.currency == task.max_cost.currency and cost.amount > task.max_cost.amount:
        raise JobFailed(
            "BUDGET_EXCEEDED",
            f"the task cost {cost} which exceeds its limit of {task.max_cost}",
            {
                "cost": str(cost.amount),
                "cost_currency": cost.currency,
                "max_cost": str(task.max_cost.amount),
            },
        )
