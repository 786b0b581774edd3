"""Cost totals and the budget: warning at 80%, fail or pause at 100%."""

from __future__ import annotations

from engine_support import Driver, agent, spec, usd

from trinity_execution.domain import (
    BudgetExceeded,
    BudgetWarning,
    CancelWork,
    ProcessFailed,
    ProcessPaused,
    ResumeExecution,
    StepFailed,
    WorkFailed,
)
from trinity_process_model.model import Budget, BudgetAction, Money, RetryPolicy


def budgeted(action: BudgetAction = BudgetAction.FAIL) -> Driver:
    d = Driver.of(
        spec(
            agent("a"),
            agent("b"),
            agent("c", "a"),
            budget=Budget(usd(10), action),
        )
    )
    d.start()
    return d


def test_warning_and_exceeded_fail_the_execution() -> None:
    d = budgeted()
    d.complete("a", cost=usd("7.99"))
    assert not d.facts_of(BudgetWarning)
    assert d.step_status("c") == "running"
    d.complete("c", cost=usd("0.01"))
    warning = d.facts_of(BudgetWarning)[0]
    assert (warning.total_cost, warning.budget) == (usd("8.00"), usd(10))
    d.complete("b", cost=usd("2.00"))
    exceeded = d.facts_of(BudgetExceeded)[0]
    assert exceeded.action is BudgetAction.FAIL and exceeded.total_cost == usd("10.00")
    failed = d.facts_of(ProcessFailed)[0]
    assert failed.error.code == "BUDGET_EXCEEDED"
    assert failed.total_cost == usd("10.00")


def test_exceeding_at_once_warns_then_exceeds_and_cancels_running_work() -> None:
    d = budgeted()
    d.complete("a", cost=usd("12"))
    kinds = [type(f).__name__ for f in d.decisions[-1].facts]
    assert (
        kinds.index("BudgetWarning") < kinds.index("BudgetExceeded") < kinds.index("ProcessFailed")
    )
    # c was ready but does not start; b's work is cancelled
    assert d.step_status("c") == "skipped"
    assert d.state is not None and d.state.step("c").skip_reason == "execution_failed"
    assert CancelWork(d.work("b").key, "execution failed: BUDGET_EXCEEDED") in d.commands
    assert any(f.step_id == "b" and f.error.code == "CANCELLED" for f in d.facts_of(StepFailed))


def test_pause_on_exceeded_holds_new_steps_until_resumed() -> None:
    d = budgeted(BudgetAction.PAUSE)
    d.complete("a", cost=usd("10"))
    assert d.status == "paused"
    assert d.facts_of(ProcessPaused)[0].paused_by == "budget"
    assert d.step_status("c") == "ready"
    d.complete("b", cost=usd("1"))  # running work still finishes
    assert d.state is not None and d.state.total_cost == usd("11")
    assert len(d.facts_of(BudgetExceeded)) == 1
    d.send(ResumeExecution(now=d.tick(), by="ops"))
    assert d.step_status("c") == "running"
    d.complete("c", cost=usd("1"))
    assert d.status == "completed"


def test_max_cost_is_the_steps_own_never_lowered_to_what_is_left() -> None:
    d = Driver.of(
        spec(
            agent("a", max_cost=usd(3)),
            agent("b", "a", max_cost=usd(3)),
            budget=Budget(usd(5)),
        )
    )
    d.start()
    assert d.work("a").payload.max_cost == usd(3)  # type: ignore[union-attr]
    d.complete("a", cost=usd("2.5"))
    assert d.work("b").payload.max_cost == usd(3)  # type: ignore[union-attr]
    # b spends past the budget: the cost counts, the budget is exceeded, the overspend shows
    d.complete("b", cost=usd("3"))
    assert d.state is not None and d.state.total_cost == usd("5.5")
    assert d.facts_of(BudgetExceeded)[0].total_cost == usd("5.5")
    assert d.facts_of(ProcessFailed)[0].total_cost == usd("5.5")


def test_a_failed_attempt_that_spent_money_is_counted() -> None:
    d = Driver.of(
        spec(
            agent("a", max_cost=usd(1), retry=RetryPolicy(max_attempts=2)),
            agent("b"),
            budget=Budget(usd("1.5"), BudgetAction.PAUSE),
        )
    )
    d.start()
    ref = d.work("a").correlation
    assert ref is not None
    d.send(
        WorkFailed(
            now=d.tick(),
            step_id="a",
            iteration=1,
            attempt=1,
            code="BUDGET_EXCEEDED",
            message="the task cost 1.2 USD which exceeds its limit of 1 USD",
            cost=usd("1.2"),
        )
    )
    assert d.state is not None and d.state.total_cost == usd("1.2")
    assert d.state.step("a").cost == usd("1.2")
    assert d.facts_of(BudgetWarning)  # 80% of 1.5
    d.complete("b", cost=usd("0.5"))
    assert d.state.total_cost == usd("1.7")
    assert d.facts_of(BudgetExceeded)[0].action is BudgetAction.PAUSE
    assert d.status == "paused"


def test_a_failure_spending_past_the_budget_fails_with_the_total() -> None:
    d = Driver.of(spec(agent("a", max_cost=usd(1)), budget=Budget(usd("1"))))
    d.start()
    d.send(
        WorkFailed(
            now=d.tick(), step_id="a", iteration=1, attempt=1, code="BUDGET_EXCEEDED", cost=usd(2)
        )
    )
    failed = d.facts_of(ProcessFailed)[0]
    assert failed.total_cost == usd(2)
    assert failed.error.code == "BUDGET_EXCEEDED"
    assert len(d.facts_of(BudgetExceeded)) == 1


def test_cost_without_budget_is_totalled() -> None:
    d = Driver.of(spec(agent("a"), agent("b")))
    d.start()
    d.complete("a", cost=usd("0.000000001"))
    d.complete("b", cost=usd("0.1"))
    assert d.state is not None and d.state.total_cost == usd("0.100000001")


def test_cost_in_another_currency_fails_the_step() -> None:
    d = budgeted()
    d.complete("a", cost=Money(usd(1).amount, "EUR"))
    assert d.facts_of(StepFailed)[0].error.code == "CURRENCY_MISMATCH"
