"""The progress count of `--watch`, from the facts alone (a replay reads as it happened)."""

from __future__ import annotations

from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import facts_pb2 as facts
from trinity_cli.watch import Tally, describe_fact


def _run(
    tally: Tally,
    *events: facts.StepStarted | facts.StepCompleted | facts.GatewayEvaluated | facts.StepSkipped,
) -> list[str]:
    counts = []
    for event in events:
        tally.count(event)
        counts.append(str(tally))
    return counts


def test_a_loop_starts_its_body_over() -> None:
    tally = Tally(total=5, kinds={})
    started, done = facts.StepStarted, facts.StepCompleted
    assert _run(
        tally,
        started(step_id="research"),
        done(step_id="research"),
        started(step_id="review"),
        done(step_id="review"),
        started(step_id="decide"),
        facts.GatewayEvaluated(step_id="decide", selected_targets=["research"]),
        done(step_id="decide"),  # the gateway is part of the loop: it starts over too
        started(step_id="research", iteration=2),
        done(step_id="research", iteration=2),
        started(step_id="review", iteration=2),
        done(step_id="review", iteration=2),
        facts.GatewayEvaluated(step_id="decide", selected_targets=["publish"]),
        done(step_id="decide", iteration=2),
        facts.StepSkipped(step_id="reject", reason="route_not_taken"),
        done(step_id="publish"),
    ) == [
        "0/5",
        "1/5",
        "1/5",
        "2/5",
        "2/5",
        "0/5",
        "0/5",
        "0/5",
        "1/5",
        "1/5",
        "2/5",
        "2/5",
        "3/5",
        "4/5",
        "5/5",
    ]


def test_lines_for_facts() -> None:
    kinds = {"decide": int(pb.STEP_KIND_GATEWAY)}
    assert (
        describe_fact(facts.StepStarted(step_id="decide", kind=pb.STEP_KIND_GATEWAY), kinds) == ""
    )
    assert describe_fact(facts.StepCompleted(step_id="decide"), kinds) == ""
    waiting = facts.StepStarted(step_id="review", kind=pb.STEP_KIND_HUMAN_APPROVAL, iteration=2)
    assert describe_fact(waiting, kinds) == "review waiting for a decision · iteration 2"
    child = facts.StepStarted(step_id="files", kind=pb.STEP_KIND_SUB_PROCESS)
    assert describe_fact(child, kinds) == "files waiting for its child execution"
    failed = facts.StepFailed(step_id="code", attempt=2, will_retry=True)
    failed.error.code, failed.error.message = "TIMEOUT", "took too long"
    assert (
        describe_fact(failed, kinds)
        == "code failed · attempt 2 · TIMEOUT: took too long · will retry"
    )
    exceeded = facts.BudgetExceeded(action=2)
    exceeded.total_cost.currency_code = exceeded.budget.currency_code = "USD"
    exceeded.total_cost.units, exceeded.budget.units = 6, 5
    assert describe_fact(exceeded, kinds) == "budget exceeded: 6.00 USD of 5.00 USD (pause)"


def test_who_paused_and_resumed() -> None:
    paused = facts.ProcessPaused(paused_by="lead@example.com", reason="look first")
    assert describe_fact(paused, {}) == "paused by lead@example.com: look first"
    assert describe_fact(facts.ProcessPaused(paused_by="budget"), {}) == "paused by budget"
    resumed = facts.ProcessResumed()  # no principal: the services run without authentication
    assert describe_fact(resumed, {}) == "resumed by an unauthenticated caller"


def test_lines_for_compensation() -> None:
    from trinity.process.common.v1 import types_pb2
    from trinity_cli.errors import ExitCode
    from trinity_cli.watch import exit_code_of

    started = facts.CompensationStarted(
        reason=pb.COMPENSATION_REASON_FAILURE,
        targets=[
            facts.CompensationTarget(step_id="draft", iteration=2),
            facts.CompensationTarget(step_id="reserve", iteration=1),
        ],
    )
    assert describe_fact(started, {}) == "compensating (failure): undoing draft#2, reserve"
    done = facts.StepCompensated(step_id="draft", iteration=2, attempt=2, output="gone")
    assert describe_fact(done, {}) == "draft · iteration 2 · attempt 2 compensated · 'gone'"
    failed = facts.CompensationFailed(
        step_id="reserve",
        iteration=1,
        attempt=1,
        error=types_pb2.Failure(code="AGENT_ERROR", message="exit 3"),
        not_compensated=1,
    )
    assert describe_fact(failed, {}) == (
        "compensation of reserve failed · AGENT_ERROR: exit 3 · 1 not compensated"
    )
    assert describe_fact(facts.CompensationCompleted(compensated=2), {}) == (
        "compensation completed · 2 undone"
    )
    ended = pb.Execution(status=pb.EXECUTION_STATUS_COMPENSATION_FAILED)
    assert exit_code_of(ended) is ExitCode.EXECUTION_FAILED
