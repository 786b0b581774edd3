"""The WorkRequest aggregate and its lease rules, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from trinity_work.domain import events as ev
from trinity_work.domain.errors import (
    StaleDelivery,
    WorkFinished,
    WorkLeasedElsewhere,
    WorkNotLeased,
)
from trinity_work.domain.lease import DEFAULT_LEASE, MAX_LEASE, MIN_LEASE, lease_duration
from trinity_work.domain.model import (
    AgentTask,
    Failure,
    Money,
    StepRef,
    WorkKind,
    WorkResult,
    WorkStatus,
)
from trinity_work.domain.work import WorkRequest

T0 = datetime(2025, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=10)


def new_work(max_deliveries: int = 3) -> WorkRequest:
    work = WorkRequest.request(
        work_id="w1",
        request_id="exec/step/1/1",
        payload=AgentTask("echo", "hello"),
        correlation=StepRef("exec", "step", 1, 1),
        timeout=timedelta(minutes=1),
        max_deliveries=max_deliveries,
        now=T0,
    )
    work.events.clear()
    return work


def test_request_raises_the_fact_and_the_first_intent() -> None:
    work = WorkRequest.request(
        work_id="w1",
        request_id="k",
        payload=AgentTask("echo", "hi"),
        correlation=StepRef(),
        timeout=timedelta(minutes=1),
        max_deliveries=3,
        now=T0,
    )
    assert work.kind is WorkKind.AGENT_TASK
    assert work.status is WorkStatus.REQUESTED
    assert work.events == [ev.WorkRequested(T0), ev.ExecutionRequested(1, T0)]


def test_start_grants_a_lease_and_a_retry_only_renews_it() -> None:
    work = new_work()
    work.start("ex-1", 1, LEASE, T0)
    assert work.status is WorkStatus.STARTED
    assert work.lease_expires_at == T0 + LEASE
    assert work.events == [ev.WorkStarted("ex-1", 1, T0)]
    work.start("ex-1", 1, LEASE, T0 + timedelta(seconds=5))
    assert work.lease_expires_at == T0 + timedelta(seconds=15)
    assert len(work.events) == 1


def test_another_executor_cannot_take_leased_work() -> None:
    work = new_work()
    work.start("ex-1", 1, LEASE, T0)
    with pytest.raises(WorkLeasedElsewhere) as info:
        work.start("ex-2", 1, LEASE, T0)
    assert info.value.reason == "WORK_LEASED_ELSEWHERE"


def test_a_stale_delivery_is_refused() -> None:
    work = new_work()
    work.start("ex-1", 1, LEASE, T0)
    assert work.expire_lease(T0 + LEASE)
    with pytest.raises(StaleDelivery):
        work.start("ex-2", 1, LEASE, T0 + LEASE)
    work.start("ex-2", 2, LEASE, T0 + LEASE)
    assert work.executor_id == "ex-2"


def test_complete_needs_the_lease_and_ends_the_work() -> None:
    work = new_work()
    result = WorkResult(output="hello", cost=Money(Decimal("0.5"), "USD"))
    with pytest.raises(WorkNotLeased):
        work.complete("ex-1", result, T0)
    work.start("ex-1", 1, LEASE, T0)
    with pytest.raises(WorkNotLeased):
        work.complete("ex-2", result, T0)
    work.complete("ex-1", result, T0 + timedelta(seconds=1))
    assert work.status is WorkStatus.COMPLETED
    assert work.result == result
    assert work.ended_at == T0 + timedelta(seconds=1)
    assert work.events[-1] == ev.WorkCompleted(result, T0 + timedelta(seconds=1))
    with pytest.raises(WorkFinished):
        work.fail("ex-1", Failure("X"), T0)


def test_fail_records_the_failure() -> None:
    work = new_work()
    work.start("ex-1", 1, LEASE, T0)
    work.fail("ex-1", Failure("AGENT_UNAVAILABLE", "down"), T0)
    assert work.status is WorkStatus.FAILED
    assert work.error == Failure("AGENT_UNAVAILABLE", "down")


def test_an_expired_lease_is_reoffered_until_the_last_delivery_then_times_out() -> None:
    work = new_work(max_deliveries=2)
    work.start("ex-1", 1, LEASE, T0)
    assert not work.expire_lease(T0 + LEASE - timedelta(microseconds=1))
    assert work.expire_lease(T0 + LEASE)
    assert work.status is WorkStatus.REQUESTED
    assert work.delivery == 2 and work.executor_id == ""
    assert work.events[-1] == ev.ExecutionRequested(2, T0 + LEASE)
    work.start("ex-2", 2, LEASE, T0 + LEASE)
    assert work.expire_lease(T0 + 2 * LEASE)
    assert work.status is WorkStatus.TIMED_OUT
    assert work.error is not None and work.error.code == "TIMEOUT"
    assert isinstance(work.events[-1], ev.WorkFailed)
    assert not work.expire_lease(T0 + 3 * LEASE)


def test_a_heartbeat_extends_the_lease_and_reports_cancellation() -> None:
    work = new_work()
    work.start("ex-1", 1, LEASE, T0)
    assert work.heartbeat("ex-1", LEASE, "half way", T0 + timedelta(seconds=8)) is False
    assert work.lease_expires_at == T0 + timedelta(seconds=18)
    assert work.progress == "half way"
    with pytest.raises(WorkNotLeased):
        work.heartbeat("ex-2", LEASE, "", T0)
    assert work.cancel("execution cancelled", T0 + timedelta(seconds=9))
    assert work.status is WorkStatus.CANCELLED
    assert work.heartbeat("ex-1", LEASE, "", T0 + timedelta(seconds=10)) is True
    with pytest.raises(WorkFinished):
        work.complete("ex-1", WorkResult(), T0)


def test_cancel_is_idempotent_but_not_after_completion() -> None:
    work = new_work()
    assert work.cancel("stop", T0)
    assert not work.cancel("stop again", T0)
    assert [type(e) for e in work.events] == [ev.WorkCancelled]
    done = new_work()
    done.start("ex-1", 1, LEASE, T0)
    done.complete("ex-1", WorkResult(), T0)
    with pytest.raises(WorkFinished):
        done.cancel("late", T0)


def test_a_release_reoffers_without_spending_a_delivery() -> None:
    work = new_work(max_deliveries=1)
    work.start("ex-1", 1, LEASE, T0)
    work.release("ex-1", T0)
    assert work.status is WorkStatus.REQUESTED and work.delivery == 2
    work.start("ex-2", 2, LEASE, T0)
    assert work.expire_lease(T0 + LEASE)
    assert work.status is WorkStatus.TIMED_OUT


def test_lease_duration_bounds() -> None:
    assert lease_duration(None) == DEFAULT_LEASE
    assert lease_duration(timedelta(0)) == DEFAULT_LEASE
    assert lease_duration(timedelta(microseconds=1)) == MIN_LEASE
    assert lease_duration(timedelta(days=2)) == MAX_LEASE
    assert lease_duration(LEASE) == LEASE


def test_a_json_object_output_becomes_structured_output() -> None:
    work = new_work()
    work.start("ex-1", 1, LEASE, T0)
    work.complete("ex-1", WorkResult(output=' {"route": "b", "score": 3} '), T0)
    assert work.result is not None and work.result.structured_output == {"route": "b", "score": 3}
    for output in ("[1, 2]", "{not json}", "plain"):
        assert WorkResult(output=output).with_structured_output().structured_output is None
    given = WorkResult(output="{}", structured_output={"kept": True})
    assert given.with_structured_output() is given
