"""An answer counts only for the request the step is waiting for (defence in depth
against forged or stale facts; the infrastructure finds the request by the work or
approval id the fact reports)."""

from __future__ import annotations

from engine_support import Driver, agent, approval, spec

from trinity_execution.domain import ApprovalDecided, WorkCompleted, WorkFailed


def test_work_answering_another_request_is_ignored() -> None:
    d = Driver.of(spec(agent("a")))
    d.start()
    request = d.work("a")
    ref = request.correlation
    assert ref is not None
    other = d.send(
        WorkCompleted(
            now=d.tick(),
            step_id="a",
            iteration=ref.iteration,
            attempt=ref.attempt,
            output="forged",
            request="ex-1/b/1/1",
        )
    )
    assert other.ignored and d.step_status("a") == "running"
    failed = d.send(
        WorkFailed(
            now=d.tick(),
            step_id="a",
            iteration=ref.iteration,
            attempt=ref.attempt,
            code="X",
            request="ex-1/a/1/2",
        )
    )
    assert failed.ignored and d.step_status("a") == "running"
    d.send(
        WorkCompleted(
            now=d.tick(),
            step_id="a",
            iteration=ref.iteration,
            attempt=ref.attempt,
            output="real",
            request=request.key,
        )
    )
    assert d.step_status("a") == "completed"


def test_a_decision_on_another_approval_is_ignored() -> None:
    d = Driver.of(spec(approval("review")))
    d.start()
    asked = d.approval_request("review")
    forged = d.send(
        ApprovalDecided(
            now=d.tick(),
            step_id="review",
            iteration=asked.correlation.iteration,
            decision="approved",
            request="ex-1/review/1/7",
        )
    )
    assert forged.ignored and d.step_status("review") == "waiting"
    d.send(
        ApprovalDecided(
            now=d.tick(),
            step_id="review",
            iteration=asked.correlation.iteration,
            decision="approved",
            request=asked.key,
        )
    )
    assert d.step_status("review") == "completed"
