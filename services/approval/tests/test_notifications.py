"""Notifications to approvers go to the work service's RequestWork, durably."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from trinity.process.approval.v1 import approval_pb2
from trinity.process.common.v1 import enums_pb2
from trinity_platform.testing import free_port


async def test_each_approver_is_notified_once_through_work(client, work_peer, wait_until) -> None:
    approval = (await client.request(title="Ship 1.2?")).approval

    async def both_notified() -> bool:
        return len(work_peer.servicer.accepted_for(approval.id)) == 2

    await wait_until(both_notified)
    by_target = {
        w.payload.notification.target: w for w in work_peer.servicer.accepted_for(approval.id)
    }
    email = by_target["alice@example.com"].payload.notification
    assert email.channel == enums_pb2.CHANNEL_EMAIL
    assert email.subject == "Approval requested: Ship 1.2?"
    assert approval.id in email.message and "exec-1" in email.message
    principal = by_target["approvals.jsonl"].payload.notification  # "bob" is no address
    assert principal.channel == enums_pb2.CHANNEL_FILE
    assert principal.message.startswith("bob,")
    keys = {w.request_id for w in work_peer.servicer.accepted_for(approval.id)}
    assert len(keys) == 2
    assert all(key.startswith(f"approval/{approval.id}/request/") for key in keys)
    await asyncio.sleep(0.2)  # nothing is sent twice once accepted
    assert len([c for c in work_peer.servicer.calls if approval.id in c.request_id]) == 2


async def test_the_notifications_due_together_go_in_one_batch_call(
    client, work_peer, wait_until
) -> None:
    approval = (await client.request(title="Ship 1.3?")).approval

    async def both_notified() -> bool:
        return len(work_peer.servicer.accepted_for(approval.id)) == 2

    await wait_until(both_notified)
    assert work_peer.servicer.batch_calls == [2]  # the two approvers' notifications


async def test_a_work_service_without_batches_gets_the_notifications_one_by_one(
    client, work_peer, wait_until
) -> None:
    work_peer.servicer.batches = False
    for title in ("Ship 1.4?", "Ship 1.5?"):
        approval = (await client.request(title=title, request_id=title)).approval

        async def both_notified() -> bool:
            return len(work_peer.servicer.accepted_for(approval.id)) == 2  # noqa: B023

        await wait_until(both_notified)
    assert work_peer.servicer.batch_calls == []
    # Told once that there is no batch RPC, the sender stops asking for a while.
    assert work_peer.servicer.unimplemented == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
async def test_notifications_are_retried_until_work_accepts(
    client, work_peer, wait_until, code: grpc.StatusCode
) -> None:
    work_peer.servicer.refuse_with = code
    approval = (await client.request()).approval

    async def retried() -> bool:
        mine = [c for c in work_peer.servicer.calls if approval.id in c.request_id]
        return len(mine) >= 4

    await wait_until(retried)
    assert work_peer.servicer.accepted_for(approval.id) == []
    work_peer.servicer.refuse_with = None

    async def accepted() -> bool:
        return len(work_peer.servicer.accepted_for(approval.id)) == 2

    await wait_until(accepted)
    keys = {c.request_id for c in work_peer.servicer.calls if approval.id in c.request_id}
    assert len(keys) == 2  # every retry carried the same idempotency key


async def test_a_notification_waits_for_a_work_service_that_is_down(
    make_service, connect, start_work_peer, wait_until
) -> None:
    port = free_port()
    service = await make_service(work_target=f"127.0.0.1:{port}")
    async with connect(service) as client:
        approval = (await client.request()).approval
    await asyncio.sleep(0.3)  # several failed attempts while nothing listens

    late = await start_work_peer(port)

    async def delivered() -> bool:
        return len(late.servicer.accepted_for(approval.id)) == 2

    await wait_until(delivered)


async def test_notifications_not_sent_before_a_decision_are_dropped(
    make_service, connect, start_work_peer, wait_until
) -> None:
    port = free_port()
    service = await make_service(work_target=f"127.0.0.1:{port}")  # work is down
    async with connect(service) as client:
        decided = (await client.request(request_id="decided")).approval
        await client.decide(decided.id, approval_pb2.DECISION_APPROVE, as_="bob")
        peer = await start_work_peer(port)  # work is back
        barrier = (await client.request(request_id="barrier")).approval

    async def barrier_delivered() -> bool:
        return len(peer.servicer.accepted_for(barrier.id)) == 2

    await wait_until(barrier_delivered)
    await asyncio.sleep(0.3)  # the decided one's backoff (max 0.2 s in tests) has passed
    assert [c for c in peer.servicer.calls if decided.id in c.request_id] == []


async def test_the_work_token_is_sent_as_a_bearer_token(
    make_service, connect, work_peer, wait_until
) -> None:
    service = await make_service(work_token="approval-to-work")
    async with connect(service) as client:
        approval = (await client.request()).approval

    async def sent() -> bool:
        return len(work_peer.servicer.accepted_for(approval.id)) == 2

    await wait_until(sent)
    assert all(
        m.get("authorization") == "Bearer approval-to-work" for m in work_peer.servicer.metadata
    )


async def test_finished_notifications_are_pruned(service, client, work_peer, wait_until) -> None:
    approval = (await client.request()).approval

    async def delivered() -> bool:
        return len(work_peer.servicer.accepted_for(approval.id)) == 2

    await wait_until(delivered)
    assert await service.sender.prune() == 0  # kept for the retention (7 days)
    assert await service.sender.prune(older_than=timedelta(0)) == 2
