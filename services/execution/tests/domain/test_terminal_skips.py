"""After a terminal failure or a cancel, every step that can no longer run ends skipped
(issue 18 §2): ``upstream_failed`` below the failed step, ``execution_failed`` or
``execution_cancelled`` elsewhere, one StepSkipped each, and progress reaches its total."""

from __future__ import annotations

from engine_support import Driver, agent, gateway, spec

from trinity_execution.domain import (
    CancelExecution,
    PauseExecution,
    ProcessFailed,
    RetryFailedSteps,
    StepSkipped,
)
from trinity_process_model.model import RetryPolicy, Route


def skipped(d: Driver) -> dict[str, str]:
    return {f.step_id: f.reason for f in d.facts_of(StepSkipped)}


def reasons(d: Driver) -> dict[str, str]:
    assert d.state is not None
    return {sid: st.skip_reason for sid, st in d.state.steps.items() if st.skip_reason}


def test_retries_exhausted_skip_the_steps_below_and_the_rest() -> None:
    d = Driver.of(
        spec(
            agent("a", retry=RetryPolicy(max_attempts=2)),
            agent("b", "a"),
            agent("c", "b"),
            agent("x"),
            agent("y", "x"),
        )
    )
    d.start()  # x runs beside a: its work is cancelled by the failure, y never starts
    d.fail("a")
    d.fire("a", "retry_backoff")
    last = d.fail("a")
    assert d.status == "failed"
    assert skipped(d) == {
        "b": "upstream_failed",
        "c": "upstream_failed",
        "y": "execution_failed",
    }
    assert reasons(d) == skipped(d)
    # the skips come before the terminal fact, so a watcher that stops there saw them
    kinds = [type(f).__name__ for f in last.facts]
    assert kinds.index("StepSkipped") < kinds.index("ProcessFailed")
    assert d.state is not None
    assert d.state.progress(d.process.size) == (5, 5)


def test_no_matching_route_skips_every_target() -> None:
    d = Driver.of(
        spec(
            agent("a"),
            gateway("g", "a", routes=(Route("b", "{{ input.go }}"), Route("c", "{{ input.go }}"))),
            agent("b"),
            agent("c"),
            agent("d", "b", "c"),
        )
    )
    d.start(go=False)
    d.complete("a")
    assert d.status == "failed"
    assert d.facts_of(ProcessFailed)[0].error.code == "NO_MATCHING_ROUTE"
    assert skipped(d) == {"b": "upstream_failed", "c": "upstream_failed", "d": "upstream_failed"}


def test_cancel_skips_what_did_not_run_and_fails_what_ran() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a"), agent("c", "b")))
    d.start()
    d.complete("a")
    d.send(CancelExecution(now=d.tick(), by="ops", reason="stop"))
    assert d.step_status("b") == "failed"  # it was running: its work was cancelled
    assert skipped(d) == {"c": "execution_cancelled"}
    assert d.state is not None and d.state.progress(3) == (3, 3)


def test_cancel_while_paused_skips_the_held_ready_steps() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a")))
    d.start()
    d.send(PauseExecution(now=d.tick(), by="ops"))
    d.complete("a")
    assert d.step_status("b") == "ready"
    d.send(CancelExecution(now=d.tick(), by="ops"))
    assert skipped(d) == {"b": "execution_cancelled"}
    assert d.state is not None and d.state.ready == []


def test_a_redrive_brings_the_skipped_steps_back() -> None:
    d = Driver.of(spec(agent("a"), agent("b", "a"), agent("c")))
    d.start()
    d.fail("a")
    assert d.step_status("b") == "skipped"
    d.send(RetryFailedSteps(now=d.tick(), by="ops"))
    assert d.status == "running"
    assert d.step_status("b") == "pending"
    d.complete("a")
    d.complete("b")
    d.complete("c")
    assert d.status == "completed"
    assert d.state is not None and d.state.progress(3) == (3, 3)
