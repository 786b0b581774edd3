"""Retries with backoff, non-retryable codes, step timeouts, permanent refusals."""

from __future__ import annotations

from datetime import timedelta

from engine_support import Driver, agent, approval, spec

from trinity_execution.domain import (
    CancelApproval,
    CancelTimer,
    CancelWork,
    CommandRejected,
    ProcessFailed,
    StepFailed,
    StepStarted,
    TimerFired,
)
from trinity_process_model.model import RetryPolicy

POLICY = RetryPolicy(
    max_attempts=3,
    initial_backoff=timedelta(seconds=10),
    backoff_multiplier=3.0,
    max_backoff=timedelta(seconds=20),
    non_retryable_codes=("BAD_INPUT",),
)


def test_failure_retries_with_backoff_then_succeeds() -> None:
    d = Driver.of(spec(agent("a", retry=POLICY), agent("b", "a")))
    d.start()
    d.fail("a")
    failed = d.facts_of(StepFailed)[-1]
    assert failed.will_retry and failed.attempt == 1
    assert failed.next_attempt_time == d.clock + timedelta(seconds=10)
    backoff = d.timer_of("a", "retry_backoff")
    assert backoff.fire_at == failed.next_attempt_time
    assert d.step_status("a") == "waiting"

    d.fire("a", "retry_backoff")
    assert d.work("a").key == "ex-1/a/1/2"
    d.fail("a")
    # backoff grows by the multiplier, capped at max_backoff
    assert d.facts_of(StepFailed)[-1].next_attempt_time == d.clock + timedelta(seconds=20)
    d.fire("a", "retry_backoff")
    d.complete("a")
    assert [f.attempt for f in d.facts_of(StepStarted) if f.step_id == "a"] == [1, 2, 3]
    assert d.step_status("b") == "running"


def test_last_failure_fails_the_execution() -> None:
    d = Driver.of(spec(agent("a", retry=RetryPolicy(max_attempts=2))))
    d.start()
    d.fail("a")
    d.fire("a", "retry_backoff")
    d.fail("a", "AGENT_UNAVAILABLE", "down")
    last = d.facts_of(StepFailed)[-1]
    assert not last.will_retry and last.next_attempt_time is None
    failed = d.facts_of(ProcessFailed)[0]
    assert (failed.failed_step_id, failed.error.code, failed.error.message) == (
        "a",
        "AGENT_UNAVAILABLE",
        "down",
    )


def test_non_retryable_code_fails_at_once() -> None:
    d = Driver.of(spec(agent("a", retry=POLICY)))
    d.start()
    d.fail("a", "BAD_INPUT")
    assert not d.facts_of(StepFailed)[0].will_retry
    assert d.status == "failed"


def test_a_missing_credential_is_never_retried_whatever_the_policy() -> None:
    d = Driver.of(spec(agent("a", retry=POLICY)))
    d.start()
    d.fail("a", "CREDENTIALS_MISSING")
    assert not d.facts_of(StepFailed)[0].will_retry
    assert d.status == "failed"


def test_default_retry_policy_of_the_process_applies() -> None:
    d = Driver.of(spec(agent("a"), default_retry=RetryPolicy(max_attempts=2)))
    d.start()
    d.fail("a")
    assert d.facts_of(StepFailed)[0].will_retry


def test_step_timeout_fails_the_attempt_and_cancels_the_work() -> None:
    d = Driver.of(spec(agent("a", timeout=timedelta(minutes=5), retry=POLICY)))
    d.start()
    request = d.work("a")
    assert request.timeout == timedelta(minutes=5)
    timeout = d.timer_of("a", "step_timeout")
    assert timeout.fire_at == d.clock + timedelta(minutes=5)
    d.fire("a", "step_timeout")
    assert CancelWork(request.key, "step timed out") in d.commands
    failed = d.facts_of(StepFailed)[0]
    assert failed.error.code == "TIMEOUT" and failed.will_retry
    # the late outcome of the timed-out attempt is ignored
    late = d.complete("a")
    assert late.ignored and not late.facts


def test_completion_cancels_the_timeout_timer() -> None:
    d = Driver.of(spec(agent("a", timeout=timedelta(minutes=5))))
    d.start()
    timeout = d.timer_of("a", "step_timeout")
    d.complete("a")
    assert CancelTimer(timeout.timer_id) in d.commands
    fired = d.send(TimerFired(now=d.tick(), timer_id=timeout.timer_id))
    assert fired.ignored


def test_permanent_refusal_fails_without_retry() -> None:
    d = Driver.of(spec(agent("a", retry=POLICY)))
    d.start()
    d.send(
        CommandRejected(
            now=d.tick(), key=d.work("a").key, code="INVALID_ARGUMENT", message="bad agent"
        )
    )
    failed = d.facts_of(StepFailed)[0]
    assert (failed.error.code, failed.will_retry) == ("INVALID_ARGUMENT", False)
    assert d.status == "failed"


def test_refused_approval_fails_the_step() -> None:
    d = Driver.of(spec(approval("r")))
    d.start()
    key = d.approval_request("r").key
    d.send(CommandRejected(now=d.tick(), key=key, code="INVALID_ARGUMENT"))
    assert d.status == "failed"
    unknown = d.send(CommandRejected(now=d.tick(), key="ex-1/zzz/1/1", code="X"))
    assert unknown.ignored


def test_cancel_while_failing_cancels_the_approval() -> None:
    d = Driver.of(spec(approval("r"), agent("a")))
    d.start()
    d.fail("a")
    assert CancelApproval(d.approval_request("r").key, "execution failed: AGENT_UNAVAILABLE") in (
        d.commands
    )
