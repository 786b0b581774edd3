"""Builders for definitions and a driver that feeds events to the engine (tests, benchmark)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from trinity_execution.domain import (
    ApprovalDecided,
    CancelApproval,
    CancelTimer,
    CancelWork,
    Command,
    CompiledProcess,
    Decision,
    Event,
    ExecutionState,
    Fact,
    RequestApproval,
    RequestWork,
    StartExecution,
    StartTimer,
    TimerFired,
    WorkCompleted,
    WorkFailed,
    decide,
)
from trinity_process_model.model import (
    AgentTaskConfig,
    Budget,
    BudgetAction,
    Channel,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    Money,
    NotificationConfig,
    Output,
    ProcessSpec,
    RejectAction,
    RetryPolicy,
    Route,
    Step,
    TimerConfig,
)

T0 = datetime(2026, 1, 14, 9, 0, tzinfo=UTC)


def usd(amount: str | int) -> Money:
    return Money(Decimal(str(amount)), "USD")


def agent(step_id: str, *deps: str, message: str = "do it", **kw: Any) -> Step:
    max_cost = kw.pop("max_cost", None)
    return Step(step_id, AgentTaskConfig("writer", message, max_cost), depends_on=deps, **kw)


def approval(step_id: str, *deps: str, **kw: Any) -> Step:
    config = HumanApprovalConfig(
        approvers=("editor@example.com",),
        artifacts=kw.pop("artifacts", ()),
        title=kw.pop("title", "Review"),
        on_reject=kw.pop("on_reject", RejectAction.FAIL),
    )
    return Step(step_id, config, depends_on=deps, **kw)


def gateway(
    step_id: str,
    *deps: str,
    routes: Iterable[Route],
    type: GatewayType = GatewayType.EXCLUSIVE,
    **kw: Any,
) -> Step:
    return Step(step_id, GatewayConfig(type, tuple(routes)), depends_on=deps, **kw)


def timer(step_id: str, *deps: str, duration: timedelta | None = None, **kw: Any) -> Step:
    config = TimerConfig(
        duration=duration, until=kw.pop("until", ""), timezone=kw.pop("timezone", "UTC")
    )
    return Step(step_id, config, depends_on=deps, **kw)


def notification(step_id: str, *deps: str, message: str = "done", **kw: Any) -> Step:
    config = NotificationConfig(Channel.EMAIL, "team@example.com", message, "subject")
    return Step(step_id, config, depends_on=deps, **kw)


def spec(*steps: Step, **kw: Any) -> ProcessSpec:
    return ProcessSpec(name=kw.pop("name", "test"), steps=steps, **kw)


IT3_BUDGET = usd(10)


def it3_spec(
    budget: Money | None = IT3_BUDGET,
    on_exceeded: BudgetAction = BudgetAction.FAIL,
    max_iterations: int = 3,
) -> ProcessSpec:
    """The seed's IT3 shape: research → review → exclusive gateway (approved → publish;
    needs_changes → revise → back to review, max 3) → timer → notification."""
    return spec(
        agent("research", message="Research {{ input.topic }}", informed=("analyst",)),
        approval(
            "review",
            "research",
            artifacts=("{{ steps.research.output }}",),
            title="Review research on {{ input.topic }}",
            on_reject=RejectAction.CONTINUE,
        ),
        gateway(
            "decide",
            "review",
            routes=(
                Route("publish", "{{ steps.review.decision == 'approved' }}"),
                Route("revise", "{{steps.review.decision}} == 'needs_changes'"),
            ),
        ),
        agent("revise", message="Revise: {{ steps.review.comment }}"),
        gateway(
            "back_to_review",
            "revise",
            routes=(Route("review", is_default=True, max_iterations=max_iterations),),
        ),
        agent("publish", message="Publish {{ steps.research.output }}"),
        timer("wait", "publish", duration=timedelta(hours=1)),
        notification("announce", "wait", message="Published {{ input.topic }}"),
        name="content-pipeline",
        budget=None if budget is None else Budget(budget, on_exceeded),
        outputs=(Output(Channel.SLACK, "https://hooks/x", "Done: {{ steps.publish.output }}"),),
    )


def chain_spec(n: int, retry: RetryPolicy | None = None) -> ProcessSpec:
    steps = [agent("s0")] + [agent(f"s{i}", f"s{i - 1}") for i in range(1, n)]
    return spec(*steps, name=f"chain-{n}", default_retry=retry)


@dataclass
class Driver:
    """Feeds events to the engine and keeps what came out."""

    process: CompiledProcess
    execution_id: str = "ex-1"
    state: ExecutionState | None = None
    clock: datetime = T0
    commands: list[Command] = field(default_factory=list)
    facts: list[Fact] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    @classmethod
    def of(cls, spec: ProcessSpec, **kw: Any) -> Driver:
        return cls(CompiledProcess.compile("def-1", "1.0", spec), **kw)

    def tick(self, seconds: float = 1) -> datetime:
        self.clock += timedelta(seconds=seconds)
        return self.clock

    def send(self, event: Event) -> Decision:
        decision = decide(self.process, self.state, event)
        self.events.append(event)
        self.decisions.append(decision)
        self.state = decision.state
        self.commands.extend(decision.commands)
        self.facts.extend(decision.facts)
        return decision

    # ------------------------------------------------------------ events

    def start(self, **input: Any) -> Decision:
        return self.send(
            StartExecution(
                now=self.tick(0), execution_id=self.execution_id, input=input, triggered_by="me"
            )
        )

    def work(self, step_id: str) -> RequestWork:
        """The last work request of the step."""
        for command in reversed(self.commands):
            if (
                isinstance(command, RequestWork)
                and command.correlation
                and command.correlation.step_id == step_id
            ):
                return command
        raise AssertionError(f"no work requested for {step_id}")

    def approval_request(self, step_id: str) -> RequestApproval:
        for command in reversed(self.commands):
            if isinstance(command, RequestApproval) and command.correlation.step_id == step_id:
                return command
        raise AssertionError(f"no approval requested for {step_id}")

    def timer_of(self, step_id: str, purpose: str) -> StartTimer:
        for command in reversed(self.commands):
            if (
                isinstance(command, StartTimer)
                and command.correlation.step_id == step_id
                and command.purpose == purpose
            ):
                return command
        raise AssertionError(f"no {purpose} timer for {step_id}")

    def complete(
        self,
        step_id: str,
        output: str = "ok",
        cost: Money | None = None,
        structured: dict[str, Any] | None = None,
    ) -> Decision:
        ref = self.work(step_id).correlation
        assert ref is not None
        return self.send(
            WorkCompleted(
                now=self.tick(),
                step_id=step_id,
                iteration=ref.iteration,
                attempt=ref.attempt,
                output=output,
                cost=cost,
                structured=structured,
            )
        )

    def fail(self, step_id: str, code: str = "AGENT_UNAVAILABLE", message: str = "") -> Decision:
        ref = self.work(step_id).correlation
        assert ref is not None
        return self.send(
            WorkFailed(
                now=self.tick(),
                step_id=step_id,
                iteration=ref.iteration,
                attempt=ref.attempt,
                code=code,
                message=message or code.lower(),
            )
        )

    def decide_approval(self, step_id: str, decision: str, comment: str = "") -> Decision:
        ref = self.approval_request(step_id).correlation
        return self.send(
            ApprovalDecided(
                now=self.tick(),
                step_id=step_id,
                iteration=ref.iteration,
                decision=decision,
                decided_by="editor@example.com",
                comment=comment,
            )
        )

    def fire(self, step_id: str, purpose: str = "step_timer") -> Decision:
        started = self.timer_of(step_id, purpose)
        self.clock = max(self.clock, started.fire_at)
        return self.send(TimerFired(now=self.clock, timer_id=started.timer_id))

    # ------------------------------------------------------------ queries

    def facts_of(self, kind: type) -> list[Any]:
        return [f for f in self.facts if isinstance(f, kind)]

    def commands_of(self, kind: type) -> list[Any]:
        return [c for c in self.commands if isinstance(c, kind)]

    @property
    def status(self) -> str:
        assert self.state is not None
        return str(self.state.status)

    def step_status(self, step_id: str) -> str:
        assert self.state is not None
        return str(self.state.step(step_id).status)


def outstanding(commands: Iterable[Command]) -> dict[str, Command]:
    """Requests and timers asked for and not cancelled, by key or timer id."""
    open_: dict[str, Command] = {}
    for command in commands:
        if isinstance(command, RequestWork | RequestApproval):
            open_[command.key] = command
        elif isinstance(command, StartTimer):
            open_[command.timer_id] = command
        elif isinstance(command, CancelWork | CancelApproval):
            open_.pop(command.key, None)
        elif isinstance(command, CancelTimer):
            open_.pop(command.timer_id, None)
    return open_
