"""Outbox + relay against a real nats-server and real SQLite / PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.db import OUTBOX, create_engine, read_only
from trinity_platform.envelope import Envelope, decode, parse_time
from trinity_platform.outbox import (
    OutboxMessage,
    OutboxSignal,
    add_many_to_outbox,
    add_to_outbox,
)
from trinity_platform.relay import BATCHES_IN_FLIGHT, OutboxRelay, RelayError
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import fact_subject, facts_stream
from trinity_platform.testing import NatsServer

from .conftest import connect

SUBJECT = fact_subject("definition", "DefinitionPublished")
STREAM = facts_stream("definition")
SOURCE = "trinity.process/definition"
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def write_facts(engine: AsyncEngine, count: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + count):
        async with engine.begin() as conn:
            ids.append(
                await add_to_outbox(
                    conn,
                    message=StringValue(value=f"fact-{i}"),
                    subject=SUBJECT,
                    aggregate_id=f"def-{i % 3}",
                    correlation_id="exec-1",
                    causation_id=f"cause-{i}",
                )
            )
    return ids


async def stream_messages(js, stream: str = STREAM) -> list[Envelope]:
    info = await js.stream_info(stream)
    envelopes = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, seq)
        envelopes.append(Envelope.from_headers(raw.headers or {}, raw.data or b"", raw.subject))
    return envelopes


async def unpublished(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        rows = await conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.published_at.is_(None)))
        return len(rows.all())


async def test_committed_rows_are_published_in_order_with_cloudevent_headers(
    engine: AsyncEngine, nc: NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    ids = await write_facts(engine, 40)
    async with engine.begin() as conn:  # several rows in one transaction keep their order
        ids += await add_many_to_outbox(
            conn,
            [
                OutboxMessage(StringValue(value=f"fact-{i}"), SUBJECT, "def-batch")
                for i in range(40, 60)
            ],
        )
    relay = OutboxRelay(engine, nc, SOURCE, batch_size=16)
    assert await relay.drain_once() == 60
    assert await relay.drain_once() == 0

    envelopes = await stream_messages(js)
    assert [e.id for e in envelopes] == ids
    first = envelopes[0]
    assert first.headers["Nats-Msg-Id"] == first.id
    assert first.headers["ce-specversion"] == "1.0"
    assert first.headers["ce-datacontenttype"] == "application/protobuf"
    assert first.source == SOURCE
    assert first.type == "google.protobuf.StringValue"
    assert first.subject == "def-0"
    assert first.correlation_id == "exec-1"
    assert first.causation_id == "cause-0"
    assert first.nats_subject == SUBJECT
    assert abs(parse_time(first.headers["ce-time"]).timestamp() - time.time()) < 60
    assert decode(first) == StringValue(value="fact-0")
    assert [decode(e).value for e in envelopes] == [f"fact-{i}" for i in range(60)]
    assert "ce-correlationid" not in envelopes[-1].headers  # empty extension left out
    assert await unpublished(engine) == 0


@SQLITE_ONLY  # no dialect-specific code on this path
async def test_rows_stay_pending_while_nats_is_down(
    engine: AsyncEngine, nc: NATS, nats_server: NatsServer
) -> None:
    await ensure_streams(nc.jetstream())
    await write_facts(engine, 5)
    relay = OutboxRelay(engine, nc, SOURCE, ack_timeout=0.5)
    await nats_server.stop_async()
    with pytest.raises(RelayError):
        await relay.drain_once()
    assert await unpublished(engine) == 5
    await nats_server.start_async()
    for _ in range(100):
        if nc.is_connected:
            break
        await asyncio.sleep(0.05)
    assert await relay.drain_once() == 5
    assert await unpublished(engine) == 0
    assert len(await stream_messages(nc.jetstream())) == 5


async def test_batch_stops_at_first_failure(engine: AsyncEngine, nc: NATS) -> None:
    await ensure_streams(nc.jetstream())
    await write_facts(engine, 3)
    async with engine.begin() as conn:  # no stream binds this subject: no ack, ever
        await add_to_outbox(
            conn, message=StringValue(value="x"), subject="nowhere.to.go", aggregate_id="a"
        )
    await write_facts(engine, 2, start=3)
    relay = OutboxRelay(engine, nc, SOURCE, ack_timeout=1.0)
    with pytest.raises(RelayError):
        await relay.drain_once()
    async with engine.connect() as conn:
        states = (await conn.execute(select(OUTBOX.c.published_at).order_by(OUTBOX.c.id))).scalars()
        assert [s is not None for s in states] == [True, True, True, False, False, False]


async def test_republishing_a_published_batch_creates_no_duplicate(
    engine: AsyncEngine, nc: NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    ids = await write_facts(engine, 30)
    relay = OutboxRelay(engine, nc, SOURCE)
    assert await relay.drain_once() == 30
    # A crash after publishing, before marking: the rows look pending again.
    async with engine.begin() as conn:
        await conn.execute(update(OUTBOX).values(published_at=None))
    restarted = OutboxRelay(engine, nc, SOURCE)
    assert await restarted.drain_once() == 30
    assert restarted.stats.duplicates == 30
    assert [e.id for e in await stream_messages(js)] == ids


@SQLITE_ONLY  # no dialect-specific code on this path
async def test_relay_is_woken_right_after_commit(engine: AsyncEngine, nc: NATS) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0)
    relay.start()
    try:
        await asyncio.sleep(0.1)  # the relay is idle, waiting for up to 30 s
        started = time.monotonic()
        await write_facts(engine, 1)
        relay.wake()
        while await unpublished(engine):
            assert time.monotonic() - started < 5, "relay was not woken"
            await asyncio.sleep(0.01)
    finally:
        await relay.stop()
    assert len(await stream_messages(js)) == 1


def lag_sum() -> float:
    return REGISTRY.get_sample_value("trinity_outbox_publish_lag_seconds_sum") or 0.0


@SQLITE_ONLY  # no dialect-specific code on this path
async def test_fact_lag_is_measured_from_the_commit_this_process_made(
    engine: AsyncEngine, nc: NATS
) -> None:
    """A row whose commit the unit of work reported: from that instant; any other row
    (another process's, one of before a restart): from its insert."""
    await ensure_streams(nc.jetstream())
    signal = OutboxSignal()
    relay = OutboxRelay(engine, nc, SOURCE, signal=signal)
    [reported] = await write_facts(engine, 1)
    signal.committed([reported], at=time.time() - 100)  # as if committed 100 s ago
    before = lag_sum()
    assert await relay.drain_once() == 1
    assert 100 <= lag_sum() - before < 150
    assert signal.commit_time(reported) is None  # taken by the relay

    await write_facts(engine, 1, start=1)  # its commit not reported: its created_at
    before = lag_sum()
    assert await relay.drain_once() == 1
    assert 0 <= lag_sum() - before < 50


async def stream_count(js: JetStreamContext) -> int:
    return int((await js.stream_info(STREAM)).state.messages)


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


@SQLITE_ONLY  # the marking in the background is SQLite's path
async def test_facts_are_published_while_the_marking_of_earlier_ones_waits_for_the_writer(
    engine: AsyncEngine, nc: NATS, database_url: str
) -> None:
    """A writer holding the database delays the marking, not the facts after it: the next
    facts are published meanwhile, the ones being marked are not published twice, and
    the marking lands once the writer is done."""
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0)
    await write_facts(engine, 3)
    gate = engine.gate  # type: ignore[attr-defined]
    await gate.acquire()  # a writer of this process holds the database
    other_process = create_engine(database_url)  # writes without this process's turn
    try:
        first = asyncio.create_task(relay.drain_once())
        await until(lambda: _equals(stream_count(js), 3), "the first facts were not published")
        assert await unpublished_read_only(engine) == 3  # their marking waits its turn
        assert not first.done()

        await write_facts(other_process, 2, start=3)
        second = asyncio.create_task(relay.drain_once())
        await until(lambda: _equals(stream_count(js), 5), "the next facts waited for the mark")
        assert relay.stats.published == 5
        assert relay.stats.duplicates == 0  # the three being marked were not sent again
    finally:
        gate.release()
        await other_process.dispose()
    assert await first == 3
    assert await second == 2
    assert await unpublished(engine) == 0
    assert [e.data for e in await stream_messages(js)] == [
        StringValue(value=f"fact-{i}").SerializeToString() for i in range(5)
    ]


@SQLITE_ONLY
async def test_a_failed_marking_leaves_the_rows_pending_and_they_are_published_once(
    engine: AsyncEngine, nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0)
    await write_facts(engine, 2)
    real_mark = relay._mark

    async def failing_mark(conn, ids):  # type: ignore[no-untyped-def]
        raise RuntimeError("the database went away")

    monkeypatch.setattr(relay, "_mark", failing_mark)
    assert await relay.drain_once() == 2
    assert await unpublished(engine) == 2  # kept: nothing is lost
    monkeypatch.setattr(relay, "_mark", real_mark)
    assert await relay.drain_once() == 2  # published again …
    assert relay.stats.duplicates == 2  # … and dropped by JetStream
    assert await unpublished(engine) == 0
    assert await stream_count(js) == 2


async def _equals(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


async def unpublished_read_only(engine: AsyncEngine) -> int:
    async with read_only(engine) as conn:
        rows = await conn.execute(select(OUTBOX.c.id).where(OUTBOX.c.published_at.is_(None)))
        return len(rows.all())


@SQLITE_ONLY  # no dialect-specific code on this path
async def test_stop_flushes_pending_rows(engine: AsyncEngine, nc: NATS) -> None:
    await ensure_streams(nc.jetstream())
    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0)
    relay.start()
    await asyncio.sleep(0.05)
    await write_facts(engine, 7)  # no wake(): only the flush at stop publishes them
    await relay.stop(flush=True)
    assert await unpublished(engine) == 0


async def test_published_rows_are_pruned(engine: AsyncEngine, nc: NATS) -> None:
    await ensure_streams(nc.jetstream())
    await write_facts(engine, 4)
    relay = OutboxRelay(engine, nc, SOURCE, retention=3600)
    await relay.drain_once()
    await write_facts(engine, 2)  # still pending: never pruned
    assert await relay.prune() == 0  # published too recently
    assert await relay.prune(older_than=0) == 4
    async with engine.connect() as conn:
        assert len((await conn.execute(select(OUTBOX.c.id))).all()) == 2


async def test_fault_nats_restart_while_facts_are_written(
    engine: AsyncEngine, nats_server: NatsServer
) -> None:
    """200 facts, NATS killed in the middle: all arrive exactly once, in order.

    The outage is driven by conditions, not by the clock: NATS goes down after 60 facts,
    40 more are written while it is down, and it comes back only once the relay has
    noticed (a failed batch), however fast or slow the machine is.
    """
    nc = await connect(nats_server.url)
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, nc, SOURCE, batch_size=20, ack_timeout=0.3, max_backoff=0.2)
    relay.start()
    ids: list[str] = []
    try:
        for i in range(200):
            ids += await write_facts(engine, 1, start=i)
            relay.wake()
            if i == 60:
                await nats_server.stop_async(kill=True)
            if i == 100:
                deadline = time.monotonic() + 30
                while relay.stats.failed_batches == 0:
                    assert time.monotonic() < deadline, "the relay never noticed the outage"
                    await asyncio.sleep(0.02)
                await nats_server.start_async()
            await asyncio.sleep(0)
        assert nats_server.running
        deadline = time.monotonic() + 20
        while await unpublished(engine):
            assert time.monotonic() < deadline, "backlog not drained after NATS came back"
            await asyncio.sleep(0.05)
    finally:
        await relay.stop()
    envelopes = await stream_messages(js)
    await nc.close()
    assert len(envelopes) == 200
    assert [e.id for e in envelopes] == ids


async def test_concurrent_relays_of_replicas_keep_order(postgres_url: str, nats_url: str) -> None:
    """Two replicas' relays on one PostgreSQL outbox: the advisory lock serializes batches."""
    from trinity_platform.db import PLATFORM_METADATA, create_engine

    engines = [create_engine(postgres_url) for _ in range(2)]
    connections = [await connect(nats_url) for _ in range(2)]
    async with engines[0].begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
    js = connections[0].jetstream()
    await ensure_streams(js)
    relays = [
        OutboxRelay(e, c, SOURCE, batch_size=7, poll_interval=0.05)
        for e, c in zip(engines, connections, strict=True)
    ]
    for relay in relays:
        relay.start()
    try:
        ids = []
        for i in range(0, 120, 3):
            ids += await write_facts(engines[i % 2], 3, start=i)
            relays[i % 2].wake()
        deadline = time.monotonic() + 20
        while await unpublished(engines[0]):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        for relay in relays:
            await relay.stop()
    assert all(r.stats.published > 0 for r in relays), "both relays should have taken turns"
    assert [e.id for e in await stream_messages(js)] == ids
    for c in connections:
        await c.close()
    for e in engines:
        await e.dispose()


async def test_a_later_message_cannot_overtake_a_rejected_earlier_one(
    engine: AsyncEngine, nc: NATS
) -> None:
    """Row 2 is rejected by the server; row 3 must not be stored ahead of it."""
    from nats.js.api import StreamConfig

    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="CHAIN", subjects=["test.chain.>"], max_msg_size=1000))

    async def put(value: str) -> str:
        async with engine.begin() as conn:
            return await add_to_outbox(
                conn, message=StringValue(value=value), subject="test.chain.x", aggregate_id="a"
            )

    relay = OutboxRelay(engine, nc, SOURCE, ack_timeout=1.0)
    first = await put("small")
    assert await relay.drain_once() == 1  # the relay has learned the stream of the subject
    big, after = await put("x" * 5000), await put("small again")
    with pytest.raises(RelayError):
        await relay.drain_once()
    assert [e.id for e in await stream_messages(js, "CHAIN")] == [first]

    await js.update_stream(
        StreamConfig(name="CHAIN", subjects=["test.chain.>"], max_msg_size=100_000)
    )
    assert await relay.drain_once() == 2
    assert [e.id for e in await stream_messages(js, "CHAIN")] == [first, big, after]


class HeldAcks:
    """Holds the acks JetStream sends the relay from ``hold()`` until ``release()`` (a
    slow ack, made deterministic): what the relay does meanwhile is what the tests look
    at. Made before the relay's first publish (which subscribes to the acks)."""

    def __init__(self, relay: OutboxRelay) -> None:
        self.held: list[Msg] = []
        self.holding = False
        self._deliver = relay._acks._on_reply
        relay._acks._on_reply = self._on_reply  # type: ignore[method-assign]

    async def _on_reply(self, msg: Msg) -> None:
        if self.holding:
            self.held.append(msg)
        else:
            await self._deliver(msg)

    def hold(self) -> None:
        self.holding = True

    async def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for msg in held:
            await self._deliver(msg)


async def write_together(engine: AsyncEngine, count: int, start: int) -> list[str]:
    """``count`` facts in one transaction: the relay sees them at once (one batch)."""
    async with engine.begin() as conn:
        return await add_many_to_outbox(
            conn,
            [
                OutboxMessage(StringValue(value=f"fact-{i}"), SUBJECT, f"def-{i % 3}")
                for i in range(start, start + count)
            ],
        )


async def held_count(acks: HeldAcks, expected: int) -> bool:
    return len(acks.held) >= expected


@SQLITE_ONLY  # the running relay pipelines batches on SQLite
async def test_the_running_relay_publishes_while_earlier_acks_are_outstanding(
    engine: AsyncEngine, nc: NATS
) -> None:
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0)
    acks = HeldAcks(relay)
    ids = await write_facts(engine, 1)
    assert await relay.drain_once() == 1  # the relay has learned the stream of the subject
    acks.hold()
    relay.start()
    try:
        ids += await write_together(engine, 2, start=1)
        relay.wake()
        await until(lambda: held_count(acks, 2), "the first facts were not published")
        ids += await write_together(engine, 3, start=3)
        relay.wake()  # published at once, not after the first batch's acks
        await until(lambda: held_count(acks, 5), "the next facts waited for earlier acks")
        assert await stream_count(js) == 6
        await acks.release()
        await until(lambda: _equals(unpublished(engine), 0), "the facts were not marked")
    finally:
        await relay.stop()
    assert relay.stats.published == 6 and relay.stats.duplicates == 0
    assert [e.id for e in await stream_messages(js)] == ids


@SQLITE_ONLY
async def test_a_fact_published_behind_a_rejected_one_in_flight_is_not_stored_ahead_of_it(
    engine: AsyncEngine, nc: NATS
) -> None:
    """Batch 1 (a fact the stream refuses) is in flight when batch 2 of the same stream
    goes out: batch 2 is chained to it and refused too; once the stream takes the
    first, both are stored in their order."""
    from nats.js.api import StreamConfig

    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="CHAIN", subjects=["test.chain.>"], max_msg_size=1000))

    async def put(value: str) -> str:
        async with engine.begin() as conn:
            return await add_to_outbox(
                conn, message=StringValue(value=value), subject="test.chain.x", aggregate_id="a"
            )

    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0, ack_timeout=5.0, max_backoff=0.05)
    acks = HeldAcks(relay)
    first = await put("small")
    assert await relay.drain_once() == 1  # the relay has learned the stream of the subject
    acks.hold()
    relay.start()
    try:
        big = await put("x" * 5000)
        relay.wake()
        await until(lambda: held_count(acks, 1), "the big fact was not published")
        after = await put("small again")
        relay.wake()
        await until(lambda: held_count(acks, 2), "the later fact waited for the earlier ack")
        await acks.release()
        await until(
            lambda: _equals(_int(lambda: relay.stats.failed_batches), 1),
            "the refusal was not noticed",
        )
        assert [e.id for e in await stream_messages(js, "CHAIN")] == [first]
        await js.update_stream(
            StreamConfig(name="CHAIN", subjects=["test.chain.>"], max_msg_size=100_000)
        )
        await until(lambda: _equals(unpublished(engine), 0), "not published after the fix")
    finally:
        await relay.stop()
    assert [e.id for e in await stream_messages(js, "CHAIN")] == [first, big, after]


async def _int(value: Callable[[], int]) -> int:
    return value()


@SQLITE_ONLY
async def test_beyond_the_batches_in_flight_facts_wait_for_an_ack_then_go_together(
    engine: AsyncEngine, nc: NATS
) -> None:
    """With BATCHES_IN_FLIGHT batches awaiting their acks, later commits gather (one
    select for many); the first ack wakes the relay and they go out."""
    js = nc.jetstream()
    await ensure_streams(js)
    relay = OutboxRelay(engine, nc, SOURCE, poll_interval=30.0)
    acks = HeldAcks(relay)
    ids = await write_facts(engine, 1)
    assert await relay.drain_once() == 1
    acks.hold()
    relay.start()
    try:
        for batch in range(BATCHES_IN_FLIGHT):
            ids += await write_together(engine, 2, start=1 + 2 * batch)
            relay.wake()
            await until(lambda b=batch: held_count(acks, 2 * (b + 1)), "a batch was not sent")
        start = 1 + 2 * BATCHES_IN_FLIGHT
        for i in range(3):  # separate commits, each waking the relay
            ids += await write_facts(engine, 1, start=start + i)
            relay.wake()
        await until(lambda: _equals(_int(lambda: int(relay._deferred)), 1), "not deferred")
        assert len(acks.held) == 2 * BATCHES_IN_FLIGHT  # the three wait
        await acks.release()  # the first ack wakes the relay: the three go out
        await until(lambda: _equals(unpublished(engine), 0), "the facts were not published")
    finally:
        await relay.stop()
    assert relay.stats.duplicates == 0 and relay.stats.failed_batches == 0
    assert [e.id for e in await stream_messages(js)] == ids
