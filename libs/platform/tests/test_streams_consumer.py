"""Stream provisioning and the pull-consumer runner against a real nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from trinity_platform.consumer import (
    Ack,
    Delivery,
    Failed,
    Nak,
    Outcome,
    PullConsumerRunner,
    Term,
)
from trinity_platform.envelope import Envelope, build_headers
from trinity_platform.streams import ensure_streams, stream_configs
from trinity_platform.subjects import (
    WORK_QUEUE_STREAM,
    fact_subject,
    facts_stream,
    work_queue_subject,
)
from trinity_platform.testing import NatsServer

STREAM = facts_stream("work")
SUBJECT = fact_subject("work", "WorkCompleted")


async def test_ensure_streams_is_idempotent_and_restores_the_config(nc: NATS) -> None:
    js = nc.jetstream()
    names = await ensure_streams(js)
    assert await ensure_streams(js) == names
    assert names == [
        "TRINITY_PROCESS_DEFINITION_FACTS",
        "TRINITY_PROCESS_EXECUTION_FACTS",
        "TRINITY_PROCESS_APPROVAL_FACTS",
        "TRINITY_PROCESS_WORK_FACTS",
        WORK_QUEUE_STREAM,
    ]
    facts = await js.stream_info(STREAM)
    assert facts.config.retention == RetentionPolicy.LIMITS
    assert facts.config.storage == StorageType.FILE
    assert facts.config.duplicate_window == 120
    assert facts.config.subjects == ["trinity.process.work.facts.v1.>"]
    queue = await js.stream_info(WORK_QUEUE_STREAM)
    assert queue.config.retention == RetentionPolicy.WORK_QUEUE
    assert queue.config.subjects == ["trinity.process.work.queue.v1.>"]

    drifted = StreamConfig(name=STREAM, subjects=["trinity.process.work.facts.v1.>"])
    drifted.duplicate_window = 5
    await js.update_stream(drifted)
    await ensure_streams(js)
    assert (await js.stream_info(STREAM)).config.duplicate_window == 120
    assert len(stream_configs(replicas=3)) == 5
    assert {c.num_replicas for c in stream_configs(replicas=3)} == {3}


async def test_concurrent_provisioning_from_several_services(nc: NATS) -> None:
    js = nc.jetstream()
    await asyncio.gather(*(ensure_streams(js) for _ in range(4)))
    assert len([n async for n in _stream_names(js)]) == 5


async def _stream_names(js):
    for name in await js.streams_info():
        yield name


async def publish(js, n: int, subject: str = SUBJECT, start: int = 0) -> None:
    for i in range(start, start + n):
        headers = build_headers(f"m{i}", "google.protobuf.StringValue", "test", "agg", _now())
        await js.publish(subject, f"{i}".encode(), headers=headers)


def _now() -> datetime:
    return datetime.now(UTC)


class Recorder:
    def __init__(self, decide=None, fail_first: set[str] | None = None) -> None:
        self.seen: list[tuple[str, int, float]] = []
        self.decide = decide or (lambda e, n: Ack())
        self.fail_first = fail_first or set()
        self.event = asyncio.Event()

    async def __call__(self, envelope: Envelope, msg: Msg) -> Outcome:
        delivered = msg.metadata.num_delivered or 1
        self.seen.append((envelope.id, delivered, time.monotonic()))
        self.event.set()
        if envelope.id in self.fail_first and delivered == 1:
            raise RuntimeError("handler bug")
        return self.decide(envelope, delivered)

    async def wait_for(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; seen {self.seen}"
            self.event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), min(remaining, 0.1))


def runner(js, handler, **kwargs) -> PullConsumerRunner:
    options = {"ack_wait": 1.0, "fetch_timeout": 0.5, "retry_base_delay": 0.1}
    options.update(kwargs)
    return PullConsumerRunner(
        js,
        stream=STREAM,
        durable="test-consumer",
        filter_subjects=[SUBJECT, fact_subject("work", "WorkFailed")],
        handler=handler,
        **options,
    )


async def test_ack_nak_term_and_handler_errors(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)

    def decide(envelope: Envelope, delivered: int) -> Outcome:
        if envelope.id == "m1" and delivered == 1:
            return Nak(delay=0.3)
        if envelope.id == "m2":
            return Term("poison")
        return Ack()

    recorder = Recorder(decide, fail_first={"m3"})
    consumer = runner(js, recorder, ack_wait=0.5)
    consumer.start()
    try:
        await publish(js, 5)
        await js.publish(SUBJECT, b"not a cloudevent")  # terminated by the runner
        await publish(js, 1, subject=fact_subject("work", "WorkFailed"), start=5)
        await publish(js, 1, subject=fact_subject("work", "WorkStarted"), start=6)  # filtered out
        await recorder.wait_for(lambda: len(recorder.seen) >= 8)
        await asyncio.sleep(0.7)  # longer than ack_wait: anything unacked would come back
    finally:
        await consumer.stop()

    deliveries: dict[str, list[int]] = {}
    times: dict[str, list[float]] = {}
    for message_id, delivered, at in recorder.seen:
        deliveries.setdefault(message_id, []).append(delivered)
        times.setdefault(message_id, []).append(at)
    assert deliveries == {
        "m0": [1],
        "m1": [1, 2],  # nak with delay: redelivered
        "m2": [1],  # term: never again
        "m3": [1, 2],  # handler exception: redelivered
        "m4": [1],
        "m5": [1],
    }
    assert times["m1"][1] - times["m1"][0] >= 0.25
    info = await js.consumer_info(STREAM, "test-consumer")
    assert info.num_ack_pending == 0
    assert info.num_pending == 0


async def test_stop_is_prompt_and_a_restart_resumes(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    recorder = Recorder()
    consumer = runner(js, recorder, fetch_timeout=5.0)
    consumer.start()
    await publish(js, 3)
    await recorder.wait_for(lambda: len(recorder.seen) == 3)
    started = time.monotonic()
    await consumer.stop()  # while a 5 s fetch waits
    assert time.monotonic() - started < 1.0
    await publish(js, 2, start=3)
    consumer = runner(js, recorder)
    consumer.start()
    try:
        await recorder.wait_for(lambda: len(recorder.seen) == 5)
    finally:
        await consumer.stop()
    assert [s[0] for s in recorder.seen] == ["m0", "m1", "m2", "m3", "m4"]


async def test_long_handlers_are_kept_alive_with_in_progress(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    recorder = Recorder()

    async def slow(envelope: Envelope, msg: Msg) -> Outcome:
        await recorder(envelope, msg)
        await asyncio.sleep(0.9)  # longer than ack_wait (0.5 s)
        return Ack()

    consumer = runner(js, slow, concurrency=2, ack_wait=0.5)
    consumer.start()
    try:
        await publish(js, 2)
        await recorder.wait_for(lambda: len(recorder.seen) >= 2)
        await asyncio.sleep(1.1)
    finally:
        await consumer.stop()
    assert sorted(s[:2] for s in recorder.seen) == [("m0", 1), ("m1", 1)]


async def test_consumer_survives_a_nats_restart(nats_server: NatsServer) -> None:
    from .conftest import connect

    nc = await connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    recorder = Recorder()
    consumer = runner(js, recorder)
    consumer.start()
    try:
        await publish(js, 1)
        await recorder.wait_for(lambda: len(recorder.seen) == 1)
        await nats_server.stop_async()
        await asyncio.sleep(0.5)
        await nats_server.start_async()
        for _ in range(100):
            if nc.is_connected:
                break
            await asyncio.sleep(0.05)
        await publish(js, 1, start=1)
        await recorder.wait_for(lambda: len(recorder.seen) == 2, timeout=10)
    finally:
        await consumer.stop()
        await nc.close()


async def test_work_queue_message_is_taken_once(nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    subject = work_queue_subject("agent_task")
    await js.publish(subject, b"x", headers=build_headers("q1", "t", "s", "a", _now()))
    recorders = [Recorder(), Recorder()]
    consumers = [
        PullConsumerRunner(
            js,
            stream=WORK_QUEUE_STREAM,
            durable="executors",
            filter_subjects=[subject],
            handler=r,
            fetch_timeout=0.3,
        )
        for r in recorders
    ]
    for c in consumers:
        c.start()
    await asyncio.sleep(0.8)
    for c in consumers:
        await c.stop()
    assert sum(len(r.seen) for r in recorders) == 1
    assert (await js.stream_info(WORK_QUEUE_STREAM)).state.messages == 0


async def test_a_batch_handler_gets_each_fetched_batch_whole_and_answers_per_message(
    nc: NATS,
) -> None:
    """The batch in stream order, invalid CloudEvents terminated before it; each message
    settled by its own outcome (Failed and a failing call redeliver with back-off)."""
    js = nc.jetstream()
    await ensure_streams(js)
    batches: list[list[tuple[str, int]]] = []
    seen = asyncio.Event()

    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        batch = [(d.envelope.id, d.msg.metadata.num_delivered or 1) for d in deliveries]
        batches.append(batch)
        seen.set()
        if any(message_id == "m5" and delivered == 1 for message_id, delivered in batch):
            raise RuntimeError("handler bug")  # every message of this batch comes back
        outcomes: list[Outcome] = []
        for message_id, delivered in batch:
            if message_id == "m1" and delivered == 1:
                outcomes.append(Nak(delay=0.3))
            elif message_id == "m2":
                outcomes.append(Term("poison"))
            elif message_id == "m3" and delivered == 1:
                outcomes.append(Failed(RuntimeError("this one failed")))
            else:
                outcomes.append(Ack())
        return outcomes

    def batch_consumer() -> PullConsumerRunner:
        return PullConsumerRunner(
            js,
            stream=STREAM,
            durable="test-batch-consumer",
            filter_subjects=[SUBJECT],
            batch_handler=handle,
            ack_wait=1.0,
            fetch_timeout=0.5,
            retry_base_delay=0.1,
        )

    def delivered() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for batch in batches:
            for message_id, count in batch:
                found.setdefault(message_id, []).append(count)
        return found

    async def wait_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 20
        while not done():
            assert time.monotonic() < deadline, batches
            seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(seen.wait(), 0.2)

    await publish(js, 3)
    await js.publish(SUBJECT, b"not a cloudevent")  # terminated by the runner
    await publish(js, 2, start=3)
    consumer = batch_consumer()
    consumer.start()
    try:
        await wait_until(
            lambda: delivered() == {"m0": [1], "m1": [1, 2], "m2": [1], "m3": [1, 2], "m4": [1]}
        )
    finally:
        await consumer.stop()
    # The first fetch took the five valid messages at once, in stream order.
    assert [message_id for message_id, _ in batches[0]] == ["m0", "m1", "m2", "m3", "m4"]
    handled = consumer.handled
    assert handled == 6  # m0, m1 twice (nak, ack), m2, m3 (ack), m4

    # A failing call: each message of its batch comes back.
    await publish(js, 2, start=5)
    consumer = batch_consumer()
    consumer.start()
    try:
        await wait_until(lambda: delivered().get("m6") == [1, 2])
        assert delivered()["m5"] == [1, 2]
        assert [("m5", 1), ("m6", 1)] in batches
        await wait_until(lambda: consumer.handled == 2)
    finally:
        await consumer.stop()
    deadline = time.monotonic() + 10  # acks are settled by the server asynchronously
    while (info := await js.consumer_info(STREAM, "test-batch-consumer")).num_ack_pending:
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.05)
    assert info.num_pending == 0


def test_a_consumer_takes_a_handler_or_a_batch_handler() -> None:
    async def each(envelope: Envelope, msg: Msg) -> Outcome:
        return Ack()

    async def whole(deliveries: Sequence[Delivery]) -> list[Outcome]:
        return [Ack() for _ in deliveries]

    for wrong in ({}, {"handler": each, "batch_handler": whole}):
        with pytest.raises(ValueError):
            PullConsumerRunner(object(), stream=STREAM, durable="d", filter_subjects=[], **wrong)


async def test_a_batch_handler_answering_the_wrong_number_of_outcomes_redelivers_the_batch(
    nc: NATS,
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    seen: list[tuple[str, int]] = []

    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        batch = [(d.envelope.id, d.msg.metadata.num_delivered or 1) for d in deliveries]
        seen.extend(batch)
        if any(delivered == 1 for _, delivered in batch):
            return [Ack()]  # one outcome for the batch: a bug, not an answer
        return [Ack() for _ in deliveries]

    await publish(js, 3)
    consumer = PullConsumerRunner(
        js,
        stream=STREAM,
        durable="test-miscounted",
        filter_subjects=[SUBJECT],
        batch_handler=handle,
        ack_wait=1.0,
        fetch_timeout=0.5,
        retry_base_delay=0.1,
    )
    consumer.start()
    try:
        deadline = time.monotonic() + 20
        while consumer.handled < 3:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
    assert sorted(seen) == [("m0", 1), ("m0", 2), ("m1", 1), ("m1", 2), ("m2", 1), ("m2", 2)]
