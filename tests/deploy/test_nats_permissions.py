"""Issue 13 §4: the broker enforces who may publish which facts. A nats-server runs
with deploy/k8s/base/nats/authorization.conf (the one the manifests ship); each identity connects with its own password and
tries what it must not do."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerConfig, DeliverPolicy

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import facts_pb2 as approval_facts
from trinity_platform.envelope import build_headers
from trinity_platform.nats_connect import NatsSecurity, connect_nats
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import (
    WORK_QUEUE_STREAM,
    fact_subject,
    facts_stream,
    work_queue_subject,
)
from trinity_platform.testing.nats_server import NatsServer

AUTHORIZATION = (
    Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base" / "nats" / "authorization.conf"
)
USERS = ("definition", "execution", "approval", "work", "executor", "subscriber", "provisioner")
SERVICES = ("definition", "execution", "approval", "work")

Connect = Callable[..., Awaitable[tuple[NATS, list[Exception]]]]


def password_env(passwords: dict[str, str]) -> dict[str, str]:
    return {f"TRINITY_NATS_{user.upper()}_PASSWORD": pw for user, pw in passwords.items()}


@pytest.fixture
async def connect(tmp_path: Path) -> AsyncIterator[Connect]:
    passwords = {user: "p" + secrets.token_hex(16) for user in USERS}  # see authorization.conf
    server = NatsServer(tmp_path / "nats", config=AUTHORIZATION, env=password_env(passwords))
    server.start()
    clients: list[NATS] = []

    async def connect(
        user: str | None, password: str | None = None
    ) -> tuple[NATS, list[Exception]]:
        errors: list[Exception] = []

        async def on_error(error: Exception) -> None:
            errors.append(error)

        security = NatsSecurity(
            user=user, password=password if password is not None else passwords.get(user or "")
        )
        options = security.connect_options()
        nc = await nats.connect(
            server.url,
            error_cb=on_error,
            allow_reconnect=False,
            connect_timeout=2,
            **options,
        )
        clients.append(nc)
        return nc, errors

    connect.url = server.url  # type: ignore[attr-defined]
    connect.passwords = passwords  # type: ignore[attr-defined]
    yield connect
    for nc in clients:
        if not nc.is_closed:
            await nc.close()
    server.stop()


def forged_decision() -> tuple[bytes, dict[str, str]]:
    fact = approval_facts.ApprovalDecided(
        approval_id=str(uuid.uuid4()),
        execution_id=str(uuid.uuid4()),
        step_id="review",
        iteration=1,
        decision=approval_pb2.DECISION_APPROVE,
        decided_by="mallory@example.com",
    )
    headers = build_headers(
        str(uuid.uuid4()),
        fact.DESCRIPTOR.full_name,
        "trinity.process/approval",
        fact.approval_id,
        datetime.now(UTC),
    )
    return fact.SerializeToString(), headers


async def stored(nc: NATS, service: str) -> int:
    return int((await nc.jetstream().stream_info(facts_stream(service))).state.messages)


async def refused(nc: NATS, errors: list[Exception], subject: str) -> bool:
    """Publish through JetStream; True when the broker refused it (no ack, a permissions
    violation reported)."""
    data, headers = forged_decision()
    try:
        await nc.jetstream(timeout=1).publish(subject, data, headers=headers)
    except Exception:
        pass
    else:
        return False
    for _ in range(100):  # the -ERR arrives asynchronously
        if any("permissions violation" in str(e).lower() for e in errors):
            return True
        await asyncio.sleep(0.02)
    return False


async def test_only_the_approval_service_can_publish_approval_facts(connect: Connect) -> None:
    approval, _ = await connect("approval")
    await ensure_streams(approval.jetstream())  # services apply the streams at start
    decided = fact_subject("approval", "ApprovalDecided")
    for user in ("executor", "work", "execution", "subscriber"):
        nc, errors = await connect(user)
        assert await refused(nc, errors, decided), user
    assert await stored(approval, "approval") == 0
    # The owner can.
    data, headers = forged_decision()
    await approval.jetstream().publish(decided, data, headers=headers)
    assert await stored(approval, "approval") == 1


async def test_anonymous_and_wrong_passwords_cannot_connect(connect: Connect) -> None:
    for user, password in ((None, None), ("approval", "guess"), ("nobody", "x")):
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await connect(user, password)
    # The platform's connect helper (every service and executor) sends the credentials.
    url, passwords = connect.url, connect.passwords  # type: ignore[attr-defined]
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await connect_nats(
            url, name="t", security=NatsSecurity(user="work", password="guess"), retry=False
        )
    nc = await connect_nats(
        url, name="t", security=NatsSecurity(user="work", password=passwords["work"]), retry=False
    )
    await nc.close()


async def test_executors_take_work_but_publish_nothing_under_trinity(connect: Connect) -> None:
    work, _ = await connect("work")
    await ensure_streams(work.jetstream())
    await work.jetstream().publish(work_queue_subject("agent_task"), b"intent")
    executor, errors = await connect("executor")
    js = executor.jetstream(timeout=2)
    await js.add_consumer(
        WORK_QUEUE_STREAM,
        ConsumerConfig(
            durable_name="work-executor-agent_task", filter_subject=work_queue_subject("agent_task")
        ),
    )
    sub = await js.pull_subscribe_bind(durable="work-executor-agent_task", stream=WORK_QUEUE_STREAM)
    [message] = await sub.fetch(1, timeout=5)
    await message.ack_sync()
    assert await refused(executor, errors, work_queue_subject("agent_task"))
    assert await refused(executor, errors, fact_subject("work", "WorkCompleted"))


async def test_subscribers_read_facts_but_cannot_take_work(connect: Connect) -> None:
    work, _ = await connect("work")
    await ensure_streams(work.jetstream())
    await work.jetstream().publish(fact_subject("work", "WorkRequested"), b"fact")
    reader, errors = await connect("subscriber")
    js = reader.jetstream(timeout=2)
    assert (await js.get_msg(facts_stream("work"), 1)).data == b"fact"
    # as examples/subscriber.py and `trinity-process facts tail` read: an ordered consumer
    ordered = await js.subscribe(
        fact_subject("work", "WorkRequested"),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    assert (await ordered.next_msg(timeout=5)).data == b"fact"
    await ordered.unsubscribe()
    with pytest.raises(Exception):  # noqa: B017 - the broker never answers the API call
        await js.add_consumer(WORK_QUEUE_STREAM, ConsumerConfig(durable_name="thief"))
    assert await refused(reader, errors, fact_subject("work", "WorkCompleted"))


async def test_the_provisioner_applies_streams_but_publishes_and_deletes_nothing(
    connect: Connect,
) -> None:
    """The streams Job's identity: create, update and inspect the streams, nothing else."""
    provisioner, errors = await connect("provisioner")
    js = provisioner.jetstream(timeout=2)
    names = await ensure_streams(js)  # create
    assert await ensure_streams(js) == names  # update (idempotent)
    assert (await js.stream_info(WORK_QUEUE_STREAM)).config.name == WORK_QUEUE_STREAM
    for service in SERVICES:
        assert await refused(provisioner, errors, fact_subject(service, "Forged")), service
    assert await refused(provisioner, errors, work_queue_subject("agent_task"))
    with pytest.raises(Exception):  # noqa: B017 - the broker never answers the API call
        await js.delete_stream(facts_stream("approval"))
    with pytest.raises(Exception):  # noqa: B017
        await js.purge_stream(WORK_QUEUE_STREAM)
    with pytest.raises(Exception):  # noqa: B017
        await js.add_consumer(WORK_QUEUE_STREAM, ConsumerConfig(durable_name="thief"))
    reader, _ = await connect("subscriber")
    for service in SERVICES:
        assert await stored(reader, service) == 0
    queue = await reader.jetstream().stream_info(WORK_QUEUE_STREAM)
    assert queue.state.messages == 0
