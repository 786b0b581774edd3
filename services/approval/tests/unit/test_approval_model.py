"""The Approval aggregate's state machine, every allowed and every refused transition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity_approval.domain import (
    DEFAULT_MAX_REMINDERS,
    SYSTEM_TIMEOUT,
    Approval,
    ApprovalAlreadyDecided,
    ApprovalCancelled,
    ApprovalDecided,
    ApprovalHasTimedOut,
    ApprovalRequested,
    ApprovalStatus,
    ApprovalTimedOut,
    ApprovalWasCancelled,
    Artifact,
    DeadlineNotReached,
    Decision,
    InvalidApproval,
    NotAnApprover,
    TimeoutAction,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def new(
    on_timeout: TimeoutAction = TimeoutAction.REJECT,
    *,
    approvers: tuple[str, ...] = ("alice@example.com", "bob"),
    timeout: timedelta = HOUR,
    reminder_interval: timedelta | None = None,
    max_reminders: int = 0,
) -> Approval:
    approval = Approval.request(
        id="a-1",
        execution_id="exec-1",
        step_id="review",
        iteration=2,
        title="Release",
        approvers=approvers,
        timeout=timeout,
        on_timeout=on_timeout,
        artifacts=(Artifact("notes", "s3://notes", "text"),),
        reminder_interval=reminder_interval,
        max_reminders=max_reminders,
        now=T0,
    )
    approval.events.clear()
    return approval


def decided(decision: Decision = Decision.APPROVE, request_id: str = "k1") -> Approval:
    approval = new()
    approval.decide(
        principal="alice@example.com",
        decision=decision,
        comment="ok",
        now=T0,
        request_id=request_id,
    )
    approval.events.clear()
    return approval


def cancelled() -> Approval:
    approval = new()
    approval.cancel("execution cancelled", T0)
    approval.events.clear()
    return approval


def timed_out() -> Approval:
    approval = new(TimeoutAction.NOTIFY, max_reminders=1)
    approval.time_out(T0 + HOUR)
    approval.time_out(T0 + 2 * HOUR)
    approval.events.clear()
    assert approval.status is ApprovalStatus.TIMED_OUT
    return approval


def snapshot(approval: Approval) -> dict[str, object]:
    return {k: v for k, v in vars(approval).items() if k != "events"}


# ---------------------------------------------------------------------- request


def test_request_creates_a_pending_approval_due_after_the_timeout() -> None:
    approval = Approval.request(
        id="a-1",
        execution_id="exec-1",
        step_id="review",
        iteration=1,
        title="Release",
        approvers=(" alice@example.com ", "bob"),
        timeout=HOUR,
        on_timeout=TimeoutAction.REJECT,
        now=T0,
    )
    assert approval.status is ApprovalStatus.PENDING
    assert approval.deadline == T0 + HOUR
    assert approval.approvers == ("alice@example.com", "bob")
    assert (approval.reminder_interval, approval.max_reminders) == (None, 0)
    [event] = approval.events
    assert isinstance(event, ApprovalRequested)
    assert (event.execution_id, event.step_id, event.iteration) == ("exec-1", "review", 1)
    assert event.deadline == T0 + HOUR


def test_notify_defaults_to_the_timeout_as_interval_and_three_reminders() -> None:
    approval = new(TimeoutAction.NOTIFY)
    assert approval.reminder_interval == HOUR
    assert approval.max_reminders == DEFAULT_MAX_REMINDERS == 3


def test_reminder_settings_are_dropped_when_the_action_is_not_notify() -> None:
    approval = new(TimeoutAction.AUTO_APPROVE, reminder_interval=HOUR, max_reminders=5)
    assert (approval.reminder_interval, approval.max_reminders) == (None, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"approvers": ()}, "approvers"),
        ({"approvers": ("alice", " ")}, "approvers[1]"),
        ({"approvers": ("alice", "ALICE")}, "approvers[1]"),
        ({"approvers": (SYSTEM_TIMEOUT,)}, "approvers[0]"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"timeout": -HOUR}, "timeout"),
        ({"reminder_interval": timedelta(0)}, "reminder_interval"),
        ({"max_reminders": 101}, "max_reminders"),
        ({"max_reminders": -1}, "max_reminders"),
        ({"execution_id": ""}, "execution_id"),
        ({"step_id": ""}, "step_id"),
    ],
)
def test_request_refuses_invalid_values(changes: dict[str, object], field: str) -> None:
    values: dict[str, object] = {
        "id": "a-1",
        "execution_id": "exec-1",
        "step_id": "review",
        "iteration": 1,
        "title": "",
        "approvers": ("alice",),
        "timeout": HOUR,
        "on_timeout": TimeoutAction.NOTIFY,
        "now": T0,
    }
    values.update(changes)
    with pytest.raises(InvalidApproval) as refused:
        Approval.request(**values)  # type: ignore[arg-type]
    assert field in [v.field for v in refused.value.violations]


# ---------------------------------------------------------------------- decide


@pytest.mark.parametrize(
    ("decision", "status"),
    [
        (Decision.APPROVE, ApprovalStatus.APPROVED),
        (Decision.REJECT, ApprovalStatus.REJECTED),
        (Decision.REQUEST_CHANGES, ApprovalStatus.NEEDS_CHANGES),
    ],
)
def test_an_approver_decides(decision: Decision, status: ApprovalStatus) -> None:
    approval = new()
    assert approval.decide(
        principal="bob", decision=decision, comment="fine", now=T0 + HOUR / 2, request_id="k"
    )
    assert approval.status is status
    assert (approval.decision, approval.decided_by, approval.comment) == (decision, "bob", "fine")
    assert approval.decided_at == T0 + HOUR / 2
    [event] = approval.events
    assert isinstance(event, ApprovalDecided)
    assert (event.decision, event.decided_by, event.comment) == (decision, "bob", "fine")
    assert (event.execution_id, event.step_id, event.iteration) == ("exec-1", "review", 2)


def test_approvers_match_without_case_and_blanks() -> None:
    approval = new()
    approval.decide(principal=" Alice@Example.COM", decision=Decision.APPROVE, comment="", now=T0)
    assert approval.status is ApprovalStatus.APPROVED


@pytest.mark.parametrize("principal", ["mallory@example.com", "", "alice", SYSTEM_TIMEOUT])
def test_a_non_approver_is_refused_and_nothing_changes(principal: str) -> None:
    approval = new()
    before = snapshot(approval)
    with pytest.raises(NotAnApprover):
        approval.decide(principal=principal, decision=Decision.APPROVE, comment="", now=T0)
    assert snapshot(approval) == before
    assert approval.events == []


def test_a_non_approver_learns_nothing_about_a_decided_approval() -> None:
    approval = decided()
    with pytest.raises(NotAnApprover):
        approval.decide(principal="mallory", decision=Decision.APPROVE, comment="", now=T0)


def test_repeating_the_same_decision_with_the_same_key_changes_nothing() -> None:
    approval = decided(Decision.APPROVE, request_id="k1")
    before = snapshot(approval)
    changed = approval.decide(
        principal="ALICE@example.com",
        decision=Decision.APPROVE,
        comment="ok",
        now=T0 + HOUR,
        request_id="k1",
    )
    assert changed is False
    assert snapshot(approval) == before
    assert approval.events == []


@pytest.mark.parametrize(
    ("principal", "decision", "request_id"),
    [
        ("alice@example.com", Decision.REJECT, "k1"),  # another decision, same key
        ("alice@example.com", Decision.APPROVE, "k2"),  # same decision, another key
        ("alice@example.com", Decision.APPROVE, ""),  # same decision, no key
        ("bob", Decision.APPROVE, "k1"),  # another approver
        ("bob", Decision.REQUEST_CHANGES, "k9"),
    ],
)
def test_a_second_decision_is_refused(principal: str, decision: Decision, request_id: str) -> None:
    approval = decided(Decision.APPROVE, request_id="k1")
    before = snapshot(approval)
    with pytest.raises(ApprovalAlreadyDecided) as refused:
        approval.decide(
            principal=principal, decision=decision, comment="ok", now=T0, request_id=request_id
        )
    assert refused.value.reason == "APPROVAL_ALREADY_DECIDED"
    assert snapshot(approval) == before


def test_deciding_a_cancelled_approval_is_refused() -> None:
    approval = cancelled()
    with pytest.raises(ApprovalWasCancelled) as refused:
        approval.decide(principal="bob", decision=Decision.APPROVE, comment="", now=T0)
    assert refused.value.reason == "APPROVAL_CANCELLED"
    assert approval.status is ApprovalStatus.CANCELLED


def test_deciding_a_timed_out_approval_is_refused() -> None:
    approval = timed_out()
    with pytest.raises(ApprovalHasTimedOut) as refused:
        approval.decide(principal="bob", decision=Decision.APPROVE, comment="", now=T0)
    assert refused.value.reason == "APPROVAL_TIMED_OUT"


# ---------------------------------------------------------------------- time out


def test_a_deadline_not_reached_is_refused() -> None:
    approval = new()
    with pytest.raises(DeadlineNotReached):
        approval.time_out(T0 + HOUR - timedelta(microseconds=1))
    assert approval.status is ApprovalStatus.PENDING
    assert approval.events == []


@pytest.mark.parametrize(
    ("action", "decision", "status"),
    [
        (TimeoutAction.REJECT, Decision.REJECT, ApprovalStatus.REJECTED),
        (TimeoutAction.AUTO_APPROVE, Decision.APPROVE, ApprovalStatus.APPROVED),
    ],
)
def test_reject_and_auto_approve_decide_as_system_timeout(
    action: TimeoutAction, decision: Decision, status: ApprovalStatus
) -> None:
    approval = new(action)
    approval.time_out(T0 + HOUR)
    assert approval.status is status
    assert (approval.decision, approval.decided_by) == (decision, SYSTEM_TIMEOUT)
    timed, decided_event = approval.events
    assert isinstance(timed, ApprovalTimedOut) and timed.action_taken is action
    assert timed.new_deadline is None
    assert isinstance(decided_event, ApprovalDecided)
    assert (decided_event.decision, decided_event.decided_by) == (decision, SYSTEM_TIMEOUT)


def test_notify_reminds_with_new_deadlines_then_times_out() -> None:
    approval = new(TimeoutAction.NOTIFY, reminder_interval=timedelta(minutes=10), max_reminders=2)
    first = T0 + HOUR + timedelta(minutes=1)  # fired a minute late (e.g. after a restart)
    approval.time_out(first)
    assert approval.status is ApprovalStatus.PENDING
    assert approval.reminders_sent == 1
    assert approval.deadline == first + timedelta(minutes=10)
    [event] = approval.events
    assert isinstance(event, ApprovalTimedOut)
    assert (event.action_taken, event.reminder, event.new_deadline) == (
        TimeoutAction.NOTIFY,
        1,
        approval.deadline,
    )
    assert event.approvers == approval.approvers
    approval.events.clear()

    with pytest.raises(DeadlineNotReached):
        approval.time_out(first + timedelta(minutes=5))
    approval.time_out(approval.deadline)
    assert (approval.status, approval.reminders_sent) == (ApprovalStatus.PENDING, 2)
    approval.events.clear()

    last = approval.deadline
    approval.time_out(last)
    assert approval.status is ApprovalStatus.TIMED_OUT
    assert approval.decided_at == last
    assert approval.decision is None and approval.decided_by == ""
    [final] = approval.events
    assert isinstance(final, ApprovalTimedOut)
    assert final.new_deadline is None and final.action_taken is TimeoutAction.NOTIFY


@pytest.mark.parametrize("make", [decided, cancelled, timed_out])
def test_time_out_of_a_final_approval_is_refused(make) -> None:  # type: ignore[no-untyped-def]
    approval = make()
    before = snapshot(approval)
    with pytest.raises((ApprovalAlreadyDecided, ApprovalWasCancelled, ApprovalHasTimedOut)):
        approval.time_out(T0 + 10 * HOUR)
    assert snapshot(approval) == before
    assert approval.events == []


# ---------------------------------------------------------------------- cancel


def test_cancel_a_pending_approval() -> None:
    approval = new()
    assert approval.cancel("execution cancelled", T0 + HOUR / 4)
    assert approval.status is ApprovalStatus.CANCELLED
    assert approval.cancel_reason == "execution cancelled"
    [event] = approval.events
    assert isinstance(event, ApprovalCancelled) and event.reason == "execution cancelled"


def test_cancelling_twice_changes_nothing() -> None:
    approval = cancelled()
    before = snapshot(approval)
    assert approval.cancel("again", T0 + HOUR) is False
    assert snapshot(approval) == before
    assert approval.events == []


def test_cancelling_a_decided_approval_is_refused() -> None:
    approval = decided()
    with pytest.raises(ApprovalAlreadyDecided):
        approval.cancel("too late", T0)
    assert approval.status is ApprovalStatus.APPROVED


def test_cancelling_a_timed_out_approval_is_refused() -> None:
    approval = timed_out()
    with pytest.raises(ApprovalHasTimedOut):
        approval.cancel("too late", T0)
    assert approval.status is ApprovalStatus.TIMED_OUT


# ---------------------------------------------------------------------- any sequence

_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("decide"),
            st.sampled_from(["alice@example.com", "bob", "mallory"]),
            st.sampled_from(list(Decision)),
            st.sampled_from(["k1", "k2", ""]),
        ),
        st.tuples(st.just("time_out"), st.integers(min_value=0, max_value=5)),
        st.tuples(st.just("cancel")),
    ),
    max_size=12,
)


@settings(max_examples=100, deadline=None)
@given(action=st.sampled_from(list(TimeoutAction)), operations=_operations)
def test_a_final_state_never_changes_and_events_follow_changes(
    action: TimeoutAction, operations: list[tuple[object, ...]]
) -> None:
    approval = new(action, max_reminders=2)
    final: dict[str, object] | None = None
    for operation in operations:
        before = snapshot(approval)
        try:
            if operation[0] == "decide":
                _, principal, decision, key = operation
                approval.decide(
                    principal=str(principal),
                    decision=decision,  # type: ignore[arg-type]
                    comment="",
                    now=T0,
                    request_id=str(key),
                )
            elif operation[0] == "time_out":
                approval.time_out(T0 + HOUR * int(operation[1]))  # type: ignore[call-overload]
            else:
                approval.cancel("stop", T0)
        except (
            NotAnApprover,
            ApprovalAlreadyDecided,
            ApprovalWasCancelled,
            ApprovalHasTimedOut,
            DeadlineNotReached,
        ):
            assert snapshot(approval) == before  # a refusal changes nothing
        if final is not None:
            assert snapshot(approval) == final
        elif not approval.is_pending:
            final = snapshot(approval)
        if approval.decided_by:
            assert approval.decided_by in {"alice@example.com", "bob", SYSTEM_TIMEOUT}
        assert approval.reminders_sent <= approval.max_reminders
    kinds = [type(e) for e in approval.events]
    assert kinds.count(ApprovalDecided) <= 1
    assert kinds.count(ApprovalCancelled) <= 1
    assert kinds.count(ApprovalDecided) + kinds.count(ApprovalCancelled) <= 1
    assert kinds.count(ApprovalTimedOut) <= approval.max_reminders + 1
    assert (kinds.count(ApprovalDecided) + kinds.count(ApprovalCancelled) == 1) or (
        approval.status in {ApprovalStatus.PENDING, ApprovalStatus.TIMED_OUT}
    )
