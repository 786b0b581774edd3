"""The durable deadline watcher: each on_timeout action, across a restart, with replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity.process.common.v1 import enums_pb2

NOTIFY = enums_pb2.TIMEOUT_ACTION_NOTIFY
REJECT = enums_pb2.TIMEOUT_ACTION_REJECT
AUTO_APPROVE = enums_pb2.TIMEOUT_ACTION_AUTO_APPROVE


def names(found) -> list[str]:  # type: ignore[no-untyped-def]
    return [envelope.type.rsplit(".", 1)[-1] for envelope, _ in found]


@pytest.mark.parametrize(
    ("action", "decision", "status"),
    [
        (REJECT, approval_pb2.DECISION_REJECT, approval_pb2.APPROVAL_STATUS_REJECTED),
        (AUTO_APPROVE, approval_pb2.DECISION_APPROVE, approval_pb2.APPROVAL_STATUS_APPROVED),
    ],
)
async def test_reject_and_auto_approve_decide_as_system_timeout(
    client, facts, action: int, decision: int, status: int
) -> None:
    approval = (await client.request(on_timeout=action, timeout_s=0.3)).approval
    found = await facts.wait(approval.id, 3)
    assert names(found) == ["ApprovalRequested", "ApprovalTimedOut", "ApprovalDecided"]
    timed_out, decided = found[1][1], found[2][1]
    assert (timed_out.execution_id, timed_out.step_id) == ("exec-1", "review")
    assert timed_out.action_taken == action
    assert not timed_out.HasField("new_deadline")
    assert (decided.decision, decided.decided_by) == (decision, "system:timeout")
    assert (decided.execution_id, decided.step_id) == ("exec-1", "review")
    final = (await client.get(approval.id)).approval
    assert (final.status, final.decision, final.decided_by) == (status, decision, "system:timeout")
    assert final.decide_time.ToDatetime() >= approval.deadline.ToDatetime()


async def test_notify_reminds_the_approvers_then_times_out(
    client, facts, work_peer, wait_until
) -> None:
    approval = (
        await client.request(
            on_timeout=NOTIFY,
            timeout_s=0.3,
            reminder_interval={"nanos": 300_000_000},
            max_reminders=2,
        )
    ).approval
    assert approval.max_reminders == 2
    assert approval.reminder_interval.ToNanoseconds() == 300_000_000
    found = await facts.wait(approval.id, 4)
    assert names(found) == [
        "ApprovalRequested",
        "ApprovalTimedOut",
        "ApprovalTimedOut",
        "ApprovalTimedOut",
    ]
    first, second, last = (fact for _, fact in found[1:])
    assert (first.action_taken, first.reminder) == (NOTIFY, 1)
    assert first.new_deadline.ToDatetime() > approval.deadline.ToDatetime()
    assert (
        second.reminder,
        second.new_deadline.ToDatetime() > first.new_deadline.ToDatetime(),
    ) == (
        2,
        True,
    )
    assert not last.HasField("new_deadline")
    final = (await client.get(approval.id)).approval
    assert final.status == approval_pb2.APPROVAL_STATUS_TIMED_OUT
    assert final.reminders_sent == 2

    async def reminders_sent() -> bool:
        return len(work_peer.servicer.accepted_for(approval.id)) == 6

    await wait_until(reminders_sent)
    keys = sorted(work_peer.servicer.accepted.keys())
    purposes = sorted(key.split("/")[2] for key in keys if approval.id in key)
    assert purposes == ["reminder-1"] * 2 + ["reminder-2"] * 2 + ["request"] * 2
    reminder = next(
        w for k, w in work_peer.servicer.accepted.items() if "reminder-2" in k and approval.id in k
    )
    assert "reminder 2 of 2" in reminder.payload.notification.message


async def test_deadlines_that_passed_while_down_fire_on_start(
    make_service, connect, facts, work_peer, wait_until
) -> None:
    first = await make_service()
    async with connect(first) as client:
        ids = {
            action: (
                await client.request(
                    request_id=f"r-{action}", on_timeout=action, timeout_s=60, max_reminders=1
                )
            ).approval.id
            for action in (REJECT, AUTO_APPROVE, NOTIFY)
        }
        # Met in time: decided, and cancelled, before their deadlines.
        decided = (await client.request(request_id="decided", timeout_s=60)).approval
        await client.decide(decided.id, approval_pb2.DECISION_APPROVE, as_="bob")
        cancelled = (await client.request(request_id="cancelled", timeout_s=60)).approval
        await client.stub.CancelApproval(api.CancelApprovalRequest(approval_id=cancelled.id))
    await first.stop()
    for approval_id in ids.values():
        assert names(await facts.of(approval_id)) == ["ApprovalRequested"]

    # The service comes back an hour later: every deadline passed while it was down.
    later = timedelta(hours=1)
    second = await make_service(clock=lambda: datetime.now(UTC) + later)
    rejected = await facts.wait(ids[REJECT], 3, timeout=5)
    approved = await facts.wait(ids[AUTO_APPROVE], 3, timeout=5)
    reminded = await facts.wait(ids[NOTIFY], 2, timeout=5)
    for found, action in ((rejected, REJECT), (approved, AUTO_APPROVE)):
        assert names(found) == ["ApprovalRequested", "ApprovalTimedOut", "ApprovalDecided"]
        assert found[1][1].action_taken == action
        assert found[2][1].decided_by == "system:timeout"
    assert names(reminded) == ["ApprovalRequested", "ApprovalTimedOut"]
    assert (reminded[1][1].action_taken, reminded[1][1].reminder) == (NOTIFY, 1)
    async with connect(second) as client:
        status = {a: (await client.get(i)).approval.status for a, i in ids.items()}
        notify = (await client.get(ids[NOTIFY])).approval
    assert status == {
        REJECT: approval_pb2.APPROVAL_STATUS_REJECTED,
        AUTO_APPROVE: approval_pb2.APPROVAL_STATUS_APPROVED,
        NOTIFY: approval_pb2.APPROVAL_STATUS_PENDING,
    }
    assert notify.reminders_sent == 1
    assert reminded[1][1].occur_time.ToDatetime(UTC) > datetime.now(UTC) + later / 2
    assert notify.deadline.ToDatetime() > reminded[1][1].occur_time.ToDatetime()

    async def reminder_sent() -> bool:
        keys = [w.request_id for w in work_peer.servicer.accepted_for(ids[NOTIFY])]
        return sum("reminder-1" in k for k in keys) == 2

    await wait_until(reminder_sent)

    # What was decided or cancelled in time stays so after its deadline passed.
    assert await facts.published(decided.id, second) == ["ApprovalRequested", "ApprovalDecided"]
    assert await facts.published(cancelled.id, second) == [
        "ApprovalRequested",
        "ApprovalCancelled",
    ]
    async with connect(second) as client:
        assert (await client.get(decided.id)).approval.decided_by == "bob"


async def test_two_replicas_fire_each_deadline_once(make_service, connect, facts) -> None:
    replicas = [await make_service(), await make_service()]
    approvals = []
    async with connect(replicas[0]) as client:
        for index in range(6):
            approvals.append(
                (
                    await client.request(
                        request_id=f"r-{index}", on_timeout=AUTO_APPROVE, timeout_s=0.2
                    )
                ).approval
            )
    for approval in approvals:
        found = await facts.wait(approval.id, 3)
        assert names(found) == ["ApprovalRequested", "ApprovalTimedOut", "ApprovalDecided"]
    await asyncio.sleep(0.2)  # both watchers have had more rounds
    for approval in approvals:
        assert await facts.published(approval.id, replicas[0]) == [
            "ApprovalRequested",
            "ApprovalTimedOut",
            "ApprovalDecided",
        ]
