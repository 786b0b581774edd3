"""The seed's IT3 shape end to end, through the pure engine."""

from __future__ import annotations

from datetime import timedelta

from engine_support import Driver, it3_spec, usd

from trinity_execution.domain import (
    AgentTaskWork,
    BudgetWarning,
    GatewayEvaluated,
    NotificationWork,
    ProcessCompleted,
    ProcessFailed,
    ProcessStarted,
    RequestWork,
    StepCompleted,
    StepSkipped,
    StepStarted,
)


def test_approved_path_runs_publish_timer_notification_and_outputs() -> None:
    d = Driver.of(it3_spec())
    d.start(topic="quantum")
    assert isinstance(d.facts[0], ProcessStarted)
    research = d.work("research")
    # no max_cost of its own: the budget is checked on what it reports, never passed down
    assert research.payload == AgentTaskWork("writer", "Research quantum", None)
    assert research.key == "ex-1/research/1/1"

    d.complete("research", "findings", cost=usd("1.25"))
    review = d.approval_request("review")
    assert review.title == "Review research on quantum"
    assert [a.text for a in review.artifacts] == ["findings"]

    d.decide_approval("review", "approved")
    gateway = d.facts_of(GatewayEvaluated)[0]
    assert gateway.selected_targets == ("publish",)
    assert (
        gateway.routes[0].matched and gateway.routes[0].value == "steps.review.decision='approved'"
    )
    assert not gateway.routes[1].matched
    skipped = {f.step_id: f.reason for f in d.facts_of(StepSkipped)}
    assert skipped == {"revise": "route_not_taken", "back_to_review": "upstream_skipped"}

    publish = d.work("publish")
    assert isinstance(publish.payload, AgentTaskWork)
    assert publish.payload.message == "Publish findings"
    assert publish.payload.max_cost is None  # never lowered to what is left of the budget

    d.complete("publish", "https://blog/post", cost=usd("2.50"))
    wait = d.timer_of("wait", "step_timer")
    assert wait.fire_at == d.clock + timedelta(hours=1)
    d.fire("wait")
    assert isinstance(d.work("announce").payload, NotificationWork)
    d.complete("announce")

    assert d.status == "completed"
    done = d.facts_of(ProcessCompleted)[0]
    assert done.total_cost == usd("3.75")
    assert done.total_duration == d.clock - d.events[0].now
    outputs = [c for c in d.commands_of(RequestWork) if c.key == "ex-1/outputs/0"]
    assert outputs[0].payload.message == "Done: https://blog/post"
    informed = [c for c in d.commands_of(RequestWork) if "/informed/" in c.key]
    assert [c.payload.target for c in informed] == ["analyst"]
    assert d.state is not None and d.state.progress(8) == (8, 8)


def test_needs_changes_loops_back_to_review_with_history() -> None:
    d = Driver.of(it3_spec())
    d.start(topic="ai")
    d.complete("research", "draft")
    d.decide_approval("review", "needs_changes", "add sources")
    assert d.work("revise").payload.message == "Revise: add sources"  # type: ignore[union-attr]
    d.complete("revise", "draft v2")
    # back_to_review looped: review is in iteration 2, with the first one in its history.
    assert d.state is not None
    review = d.state.step("review")
    assert (review.iteration, str(review.status)) == (2, "waiting")
    assert review.history[0]["decision"] == "needs_changes"
    assert d.approval_request("review").key == "ex-1/review/2/1"
    d.decide_approval("review", "approved")
    d.complete("publish", "post")
    d.fire("wait")
    d.complete("announce")
    assert d.status == "completed"
    started = [(f.step_id, f.iteration) for f in d.facts_of(StepStarted)]
    assert started.count(("review", 1)) == 1 and started.count(("review", 2)) == 1


def test_loop_limit_fails_the_execution() -> None:
    d = Driver.of(it3_spec(max_iterations=3))
    d.start(topic="ai")
    d.complete("research", "draft")
    for round_ in range(1, 4):
        d.decide_approval("review", "needs_changes", f"round {round_}")
        d.complete("revise", f"v{round_ + 1}")
    # Review ran 3 times (iterations 1..3); the third revision cannot loop again.
    assert d.status == "failed"
    failed = d.facts_of(ProcessFailed)[0]
    assert failed.error.code == "LOOP_LIMIT_REACHED"
    assert failed.failed_step_id == "back_to_review"
    reviews = [f for f in d.facts_of(StepStarted) if f.step_id == "review"]
    assert [f.iteration for f in reviews] == [1, 2, 3]


def test_budget_warning_once_at_80_percent() -> None:
    d = Driver.of(it3_spec(budget=usd(10)))
    d.start(topic="x")
    d.complete("research", cost=usd("8.00"))
    assert len(d.facts_of(BudgetWarning)) == 1
    d.decide_approval("review", "approved")
    d.complete("publish", cost=usd("0.50"))
    assert len(d.facts_of(BudgetWarning)) == 1
    completed = {f.step_id: f for f in d.facts_of(StepCompleted)}
    assert completed["research"].cost == usd("8.00")
    assert d.state is not None and d.state.total_cost == usd("8.50")
