"""Stream limits (issue 13 §7): configurable, applied, and a full work queue pushes back
into the outbox instead of dropping intents."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.config import load_settings
from trinity_platform.consumer import Ack, Outcome, PullConsumerRunner
from trinity_platform.db_errors import is_transient
from trinity_platform.envelope import Envelope, build_headers
from trinity_platform.outbox import OutboxMessage, add_many_to_outbox
from trinity_platform.relay import OutboxRelay, RelayError
from trinity_platform.streams import StreamLimits, ensure_streams, stream_limits_from_env
from trinity_platform.subjects import (
    WORK_QUEUE_STREAM,
    fact_subject,
    facts_stream,
    work_queue_subject,
)

from .test_outbox_relay import stream_messages, unpublished

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_limits_are_settings_shared_by_every_process() -> None:
    assert stream_limits_from_env({}) == StreamLimits()
    env = {
        "TRINITY_FACTS_MAX_AGE": "12h",
        "TRINITY_FACTS_MAX_BYTES": "1000000",
        "TRINITY_WORK_QUEUE_MAX_MSGS": "-1",
        "TRINITY_WORK_QUEUE_MAX_BYTES": "5000000",
    }
    limits = stream_limits_from_env(env)
    assert limits == StreamLimits(43200.0, 1_000_000, -1, 5_000_000)
    assert load_settings("work", env=env).stream_limits == limits
    for name, value in [
        ("TRINITY_FACTS_MAX_AGE", "a week"),
        ("TRINITY_FACTS_MAX_BYTES", "0"),
        ("TRINITY_WORK_QUEUE_MAX_MSGS", "lots"),
    ]:
        with pytest.raises(ValueError, match=name):
            stream_limits_from_env({name: value})


async def test_the_streams_get_their_limits(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js, limits=StreamLimits(3600.0, 10_000_000, 500, 2_000_000))
    facts = (await js.stream_info(facts_stream("work"))).config
    assert (facts.max_age, facts.max_bytes, facts.discard) == (3600, 10_000_000, DiscardPolicy.OLD)
    queue = (await js.stream_info(WORK_QUEUE_STREAM)).config
    assert (queue.max_msgs, queue.max_bytes, queue.discard) == (500, 2_000_000, DiscardPolicy.NEW)
    await ensure_streams(js)  # back to the defaults: limits change in place
    assert (await js.stream_info(WORK_QUEUE_STREAM)).config.max_msgs == 100_000


@SQLITE_ONLY  # no dialect-specific code on this path
async def test_a_full_work_queue_keeps_intents_in_the_outbox_until_there_is_room(
    engine: AsyncEngine, nc: NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, limits=StreamLimits(work_queue_max_msgs=2))
    subject = work_queue_subject("agent_task")
    async with engine.begin() as conn:
        ids = await add_many_to_outbox(
            conn, [OutboxMessage(StringValue(value=f"intent-{i}"), subject, "w") for i in range(5)]
        )
    relay = OutboxRelay(engine, nc, "trinity.process/work", batch_size=10)
    with pytest.raises(RelayError, match="maximum messages"):
        await relay.drain_once()
    assert await unpublished(engine) == 3  # refused by the full queue, kept
    taken: list[str] = []
    consumer = await js.pull_subscribe(subject, durable="limits-test", stream=WORK_QUEUE_STREAM)
    while len(taken) < 5:  # an executor makes room; the relay fills it again
        for msg in await consumer.fetch(2, timeout=5):
            assert msg.headers is not None
            taken.append(msg.headers["Nats-Msg-Id"])
            await msg.ack_sync()  # the queue has room once the server took the ack
        with contextlib.suppress(RelayError):
            await relay.drain_once()
    assert taken == ids  # each intent once, in order, none dropped
    assert await unpublished(engine) == 0
    assert await stream_messages(js, WORK_QUEUE_STREAM) == []


class _Refused(Exception):
    sqlstate = "53300"  # too_many_connections, as asyncpg reports it


async def test_a_transient_database_failure_is_redelivered_soon_whatever_the_attempt(
    nc: NATS,
) -> None:
    """The exponential redelivery delay (here 60 s from the first attempt) is for
    handler bugs; a database that refused a connection is tried again within seconds."""
    js = nc.jetstream()
    await ensure_streams(js)
    attempts: list[int] = []
    handled = asyncio.Event()

    async def handler(envelope: Envelope, msg: Msg) -> Outcome:
        attempts.append(msg.metadata.num_delivered or 1)
        if len(attempts) == 1:
            raise RuntimeError("database refused") from _Refused()
        handled.set()
        return Ack()

    subject = fact_subject("work", "WorkCompleted")
    consumer = PullConsumerRunner(
        js,
        stream=facts_stream("work"),
        durable="transient-test",
        filter_subjects=[subject],
        handler=handler,
        fetch_timeout=0.5,
        retry_base_delay=60.0,
        is_transient=is_transient,
    )
    consumer.start()
    try:
        headers = build_headers(
            "t1", "google.protobuf.StringValue", "test", "agg", datetime.now(UTC)
        )
        await js.publish(subject, b"x", headers=headers)
        await asyncio.wait_for(handled.wait(), 30)  # not 60 s
    finally:
        await consumer.stop()
    assert attempts == [1, 2]
