"""Cancel, pause, resume, redrive, duplicates and late answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from engine_support import Driver, agent, approval, spec, timer

from trinity_execution.domain import (
    ApprovalDecided,
    CancelApproval,
    CancelExecution,
    CancelTimer,
    CancelWork,
    ExecutionNotStarted,
    PauseExecution,
    ProcessCancelled,
    ProcessResumed,
    RequestWork,
    ResumeExecution,
    RetryFailedSteps,
    StartExecution,
    StepStarted,
    WorkCompleted,
)
from trinity_process_model.model import RejectAction


def started(d: Driver) -> list[tuple[str, int]]:
    return [(f.step_id, f.attempt) for f in d.facts_of(StepStarted)]


def test_cancel_cancels_everything_outstanding() -> None:
    d = Driver.of(
        spec(agent("a"), approval("r"), timer("t", duration=timedelta(hours=1)), agent("z", "a"))
    )
    d.start()
    decision = d.send(CancelExecution(now=d.tick(), by="ops", reason="wrong input"))
    assert set(decision.commands) == {
        CancelWork("ex-1/a/1/1", "wrong input"),
        CancelApproval("ex-1/r/1/1", "wrong input"),
        CancelTimer("ex-1/t/1/1/step_timer"),
    }
    assert d.status == "cancelled"
    cancelled = d.facts_of(ProcessCancelled)[0]
    assert (cancelled.cancelled_by, cancelled.reason) == ("ops", "wrong input")
    assert d.state is not None and d.state.active == {}
    # everything after is ignored
    assert d.complete("a").ignored
    assert d.send(CancelExecution(now=d.tick())).ignored


def test_pause_holds_new_steps_and_resume_starts_them() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a"), agent("c")))
    d.start()
    d.send(PauseExecution(now=d.tick(), by="ops", reason="look"))
    assert d.status == "paused"
    d.complete("a")  # running work finishes while paused
    assert d.step_status("b") == "ready"
    assert ("b", 1) not in started(d)
    assert d.send(PauseExecution(now=d.tick())).ignored
    d.send(ResumeExecution(now=d.tick(), by="ops"))
    assert d.facts_of(ProcessResumed)[0].resumed_by == "ops"
    assert ("b", 1) in started(d)
    assert d.send(ResumeExecution(now=d.tick())).ignored
    d.complete("b")
    d.complete("c")
    assert d.status == "completed"


def test_retry_backoff_firing_while_paused_waits_for_resume() -> None:
    from trinity_process_model.model import RetryPolicy

    d = Driver.of(spec(agent("a", retry=RetryPolicy(max_attempts=2))))
    d.start()
    d.fail("a")
    d.send(PauseExecution(now=d.tick()))
    d.fire("a", "retry_backoff")
    assert d.step_status("a") == "ready"
    d.send(ResumeExecution(now=d.tick()))
    assert started(d) == [("a", 1), ("a", 2)]


def test_the_last_step_finishing_while_paused_completes() -> None:
    d = Driver.of(spec(agent("a")))
    d.start()
    d.send(PauseExecution(now=d.tick()))
    d.complete("a")
    assert d.status == "completed"


def test_retry_failed_steps_redrives_from_the_failure() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a"), agent("c")))
    d.start()
    d.complete("a")
    d.fail("b", "AGENT_UNAVAILABLE")
    assert d.status == "failed"
    assert d.step_status("c") == "failed"  # cancelled by the failure
    d.send(RetryFailedSteps(now=d.tick(), step_id="b", by="ops"))
    assert d.status == "running"
    assert started(d)[-2:] == [("b", 2), ("c", 2)]
    assert d.state is not None and d.state.step("a").attempt == 1  # completed step kept
    d.complete("b")
    d.complete("c")
    assert d.status == "completed"


def test_retry_failed_steps_only_when_failed() -> None:
    d = Driver.of(spec(agent("a")))
    d.start()
    assert d.send(RetryFailedSteps(now=d.tick())).ignored
    d.fail("a")
    assert d.send(RetryFailedSteps(now=d.tick(), step_id="zzz")).ignored
    assert not d.send(RetryFailedSteps(now=d.tick())).ignored


def test_duplicate_and_late_events_change_nothing() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a")))
    d.start()
    start_again = d.send(StartExecution(now=d.tick(), execution_id="ex-1"))
    assert start_again.ignored
    done = d.complete("a")
    before = d.state.to_dict() if d.state else None
    again = d.send(d.events[-1])
    assert again.ignored and not again.facts and not again.commands
    assert d.state is not None and d.state.to_dict() == before
    wrong = d.send(WorkCompleted(now=d.tick(), step_id="b", iteration=1, attempt=7, output="x"))
    assert wrong.ignored
    unknown = d.send(WorkCompleted(now=d.tick(), step_id="nope", iteration=1, attempt=1))
    assert "unknown step" in unknown.ignored
    assert done.facts


def test_event_before_start_is_refused() -> None:
    d = Driver.of(spec(agent("a")))
    with pytest.raises(ExecutionNotStarted):
        d.send(CancelExecution(now=d.tick()))


def test_decide_never_changes_the_state_it_is_given() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a")))
    d.start()
    assert d.state is not None
    snapshot = d.state.to_dict()
    first = d.state
    d.complete("a")
    assert first.to_dict() == snapshot


def test_a_rejection_fails_the_approval_and_stops_the_path() -> None:
    d = Driver.of(spec(approval("r"), agent("deploy", "r"), agent("other")))
    d.start()
    d.decide_approval("r", "rejected", "not safe")
    assert d.step_status("r") == "failed"
    assert d.state is not None
    step = d.state.step("r")
    assert step.error is not None and step.error.code == "APPROVAL_REJECTED"
    assert "editor@example.com" in step.error.message and "not safe" in step.error.message
    assert step.decision == "rejected"
    assert d.step_status("deploy") == "skipped"
    assert step.attempt == 1  # a rejection is not retried, whatever the retry policy
    assert d.state.step("deploy").skip_reason == "upstream_failed"
    assert d.status == "failed"
    assert not any(
        s.correlation and s.correlation.step_id == "deploy" for s in d.commands_of(RequestWork)
    )


def test_a_rejection_continues_with_on_reject_continue() -> None:
    d = Driver.of(
        spec(
            approval("r", on_reject=RejectAction.CONTINUE),
            agent("after", "r", condition="{{ steps.r.decision != 'rejected' }}"),
        )
    )
    d.start()
    d.decide_approval("r", "rejected", "no")
    assert d.step_status("r") == "completed"
    assert d.state is not None and d.state.step("r").decision == "rejected"
    assert d.step_status("after") == "skipped"
    assert d.status == "completed"


def test_unknown_approval_decision_is_ignored() -> None:
    d = Driver.of(spec(approval("r")))
    d.start()
    assert d.decide_approval("r", "maybe").ignored


def test_a_timed_out_rejection_stops_the_path_too() -> None:
    d = Driver.of(spec(approval("r"), agent("deploy", "r")))
    d.start()
    ref = d.approval_request("r").correlation
    d.send(
        ApprovalDecided(
            now=d.tick(),
            step_id="r",
            iteration=ref.iteration,
            decision="rejected",
            decided_by="system:timeout",
            comment="rejected on the approvers' behalf: the deadline passed",
        )
    )
    assert d.state is not None
    error = d.state.step("r").error
    assert error is not None and error.code == "APPROVAL_REJECTED"
    assert "system:timeout" in error.message
    assert d.state.step("deploy").skip_reason == "upstream_failed"
