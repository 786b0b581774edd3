"""Trace context through the outbox, the relay's ce-traceparent header and a consumer;
nothing of it when tracing is off."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from nats.aio.client import Client as NATS
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform import telemetry
from trinity_platform.consumer import Ack, PullConsumerRunner
from trinity_platform.db import OUTBOX
from trinity_platform.envelope import H_TRACEPARENT, Envelope
from trinity_platform.outbox import add_to_outbox
from trinity_platform.relay import OutboxRelay
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import fact_subject, facts_stream

SUBJECT = fact_subject("work", "WorkCompleted")
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.configure_tracing("trinity-test", "", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown_tracing()


async def write(engine: AsyncEngine, value: str) -> str:
    async with engine.begin() as conn:
        return await add_to_outbox(
            conn,
            message=StringValue(value=value),
            subject=SUBJECT,
            aggregate_id="work-1",
            correlation_id="exec-1",
        )


async def consume_one(nc: NATS, durable: str) -> Envelope:
    seen: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handler(envelope: Envelope, _msg: object) -> Ack:
        assert telemetry.current_traceparent() != envelope.traceparent or not envelope.traceparent
        await seen.put(envelope)
        return Ack()

    runner = PullConsumerRunner(
        nc.jetstream(),
        stream=facts_stream("work"),
        durable=durable,
        filter_subjects=[SUBJECT],
        handler=handler,  # type: ignore[arg-type]
        fetch_timeout=0.2,
    )
    runner.start()
    try:
        return await asyncio.wait_for(seen.get(), 20)
    finally:
        await runner.stop()


@SQLITE_ONLY
async def test_tracing_off_leaves_no_trace_anywhere(engine: AsyncEngine, nc: NATS) -> None:
    assert not telemetry.tracing_enabled()
    with telemetry.span("anything") as current:
        assert current is None
        assert telemetry.current_traceparent() is None
        await write(engine, "untraced")
    async with engine.connect() as conn:
        assert (await conn.scalar(select(OUTBOX.c.traceparent))) is None
    await ensure_streams(nc.jetstream())
    await OutboxRelay(engine, nc, "trinity.process/work").drain_once()
    envelope = await consume_one(nc, "untraced")
    assert H_TRACEPARENT not in envelope.headers and envelope.traceparent == ""
    assert telemetry.client_interceptors({}) == []


@SQLITE_ONLY
async def test_a_fact_carries_its_cause_s_trace_to_the_consumer(
    engine: AsyncEngine, nc: NATS, spans: InMemorySpanExporter
) -> None:
    with telemetry.span("RecordWorkCompleted", kind=SpanKind.SERVER) as cause:
        await write(engine, "traced")
        traceparent = telemetry.current_traceparent()
    context = cause.get_span_context()
    assert traceparent and f"{context.trace_id:032x}-{context.span_id:016x}" in traceparent
    async with engine.connect() as conn:
        assert (await conn.scalar(select(OUTBOX.c.traceparent))) == traceparent

    await ensure_streams(nc.jetstream())
    await OutboxRelay(engine, nc, "trinity.process/work").drain_once()
    envelope = await consume_one(nc, "traced")
    assert envelope.headers[H_TRACEPARENT] == traceparent == envelope.traceparent

    consumed = [s for s in spans.get_finished_spans() if s.name == "consume StringValue"]
    assert len(consumed) == 1
    assert consumed[0].kind == SpanKind.CONSUMER
    assert consumed[0].context.trace_id == context.trace_id
    assert consumed[0].parent is not None and consumed[0].parent.span_id == context.span_id
