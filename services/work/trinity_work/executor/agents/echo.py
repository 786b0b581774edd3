"""``echo``: returns the message, at no cost (tests, demos, the default agent)."""

from __future__ import annotations

from decimal import Decimal

from trinity_work.domain.model import AgentTask, Money, WorkResult
from trinity_work.executor.agents.base import currency_of
from trinity_work.executor.jobs import Job


class EchoAgent:
    async def run(self, task: AgentTask, job: Job) -> WorkResult:
        return WorkResult(output=task.message, cost=Money(Decimal(0), currency_of(task)))

    async def close(self) -> None:
        return None
