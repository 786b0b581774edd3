"""Floor: the raw cost of the I/O the engine cannot avoid, measured in the same run.

* ``jetstream.publish_ack``: publish to a facts stream (the platform's stream
  config), awaiting each ack before the next publish.
* ``jetstream.publish_pipelined``: the same with 500 publishes in flight.
  Both carry ``Nats-Msg-Id``, as every relayed message does.
* ``grpc.unary_1`` / ``grpc.unary_50``: a grpc.aio unary echo (bytes, no
  interceptors) in a separate process; one caller in sequence, 50 calls in flight.
* ``sqlite.raw_commit``: the same two inserts through the stdlib sqlite3 driver
  (WAL, synchronous=NORMAL), without asyncio or SQLAlchemy: the true floor.
* ``<db>.commit`` / ``<db>.commit_10``: one transaction = one aggregate row + one
  outbox row (SQLAlchemy Core, :func:`add_to_outbox`), on an engine made by the
  platform's ``create_engine`` (SQLite: WAL, synchronous=NORMAL, BEGIN IMMEDIATE);
  one writer in sequence, and 10 writers at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from datetime import UTC, datetime

import grpc
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.execution.v1 import execution_pb2, facts_pb2
from trinity_platform.outbox import add_to_outbox
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import fact_subject

from .core import Bench, Skip, Values, drive, latency_summary
from .echo_server import METHOD
from .infra import BENCH_ITEMS, Subprocess, bench_engine, connect_nats, private_nats

SUBJECT = fact_subject("execution", "StepStarted")
PAYLOAD_SIZE = 256
PIPELINE_WINDOW = 500
WRITERS = 10


def time_cap(bench: Bench) -> float:
    """Seconds one run of a case may take at most (its count is reached first when the
    machine is not busy)."""
    return bench.pick(1.0, 2.5)


def sample_fact(index: int = 0) -> facts_pb2.StepStarted:
    """A realistic fact (the payload a relay publishes)."""
    return facts_pb2.StepStarted(
        execution=execution_pb2.ExecutionRef(
            execution_id=str(uuid.uuid4()),
            process_id=str(uuid.uuid4()),
            process_name="bench",
            process_version="1.0",
        ),
        step_id=f"step_{index}",
        step_name=f"Step {index}",
        attempt=1,
    )


async def run(bench: Bench) -> None:
    await jetstream_cases(bench)
    await grpc_cases(bench)
    for kind in ("sqlite", "postgres"):
        await database_cases(bench, kind)


# --------------------------------------------------------------------------- JetStream


async def jetstream_cases(bench: Bench) -> None:
    async with private_nats(bench.workdir) as server:
        nc = await connect_nats(server.url)
        try:
            js = nc.jetstream(timeout=5)
            await ensure_streams(js)
            payload = sample_fact().SerializeToString().ljust(PAYLOAD_SIZE, b"\0")
            cap = time_cap(bench)

            async def publish_one() -> None:
                await js.publish(SUBJECT, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})

            async def publish_ack() -> Values:
                count, elapsed, latencies = await drive(
                    publish_one, total=bench.pick(200, 1_500), seconds=cap
                )
                return {"msgs_per_s": count / elapsed, **latency_summary(latencies)}

            pipelined_js = nc.jetstream(timeout=5, publish_async_max_pending=PIPELINE_WINDOW)

            async def publish_pipelined() -> Values:
                count = bench.pick(1_500, 20_000)
                started = time.perf_counter()
                deadline = started + cap
                futures = []
                for _ in range(count):
                    futures.append(
                        await pipelined_js.publish_async(
                            SUBJECT,
                            payload,
                            headers={"Nats-Msg-Id": str(uuid.uuid4())},
                            wait_stall=5,
                        )
                    )
                    if len(futures) % PIPELINE_WINDOW == 0 and time.perf_counter() > deadline:
                        break
                await asyncio.gather(*futures)
                elapsed = time.perf_counter() - started
                return {"msgs_per_s": len(futures) / elapsed}

            await publish_ack()  # warm-up: connection, stream files
            await bench.measure("jetstream.publish_ack", publish_ack)
            await bench.measure("jetstream.publish_pipelined", publish_pipelined)
        finally:
            await nc.close()


# --------------------------------------------------------------------------- gRPC


async def grpc_cases(bench: Bench) -> None:
    payload = b"x" * 128
    async with (
        Subprocess("tests.bench.echo_server") as server,
        grpc.aio.insecure_channel(server.target) as channel,
    ):
        echo = channel.unary_unary(METHOD)
        await asyncio.wait_for(channel.channel_ready(), 10)

        async def calls(total: int, in_flight: int) -> Values:
            count, elapsed, latencies = await drive(
                lambda: echo(payload, timeout=10),
                total=total,
                seconds=time_cap(bench),
                concurrency=in_flight,
            )
            return {"calls_per_s": count / elapsed, **latency_summary(latencies)}

        async def unary_1() -> Values:
            return await calls(bench.pick(300, 3_000), 1)

        async def unary_50() -> Values:
            return await calls(bench.pick(1_000, 10_000), 50)

        await calls(200, 10)  # warm-up
        await bench.measure("grpc.unary_1", unary_1)
        await bench.measure("grpc.unary_50", unary_50)


# --------------------------------------------------------------------------- databases


async def commit_one(engine: AsyncEngine, index: int) -> str:
    """One transaction as a command handler writes it: the aggregate row + one outbox row.

    Returns the outbox row's message id.
    """
    item_id = str(uuid.uuid4())
    fact = sample_fact(index)
    async with engine.begin() as conn:
        await conn.execute(
            insert(BENCH_ITEMS).values(
                id=item_id, version=1, state=fact.SerializeToString(), updated_at=datetime.now(UTC)
            )
        )
        return await add_to_outbox(
            conn, message=fact, subject=SUBJECT, aggregate_id=item_id, correlation_id=item_id
        )


async def commits(engine: AsyncEngine, total: int, writers: int, seconds: float) -> Values:
    count, elapsed, latencies = await drive(
        lambda: commit_one(engine, 0), total=total, seconds=seconds, concurrency=writers
    )
    return {"commits_per_s": count / elapsed, **latency_summary(latencies)}


def raw_sqlite_commits(path: str, total: int, seconds: float) -> Values:
    """The same two inserts per transaction through the stdlib driver, no asyncio."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, state BLOB)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE,"
            " subject TEXT, payload BLOB, created_at TEXT, published_at TEXT)"
        )
        latencies = []
        started = time.perf_counter()
        for index in range(total):
            if time.perf_counter() - started > seconds:
                break
            sent = time.perf_counter()
            payload = sample_fact(index).SerializeToString()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO items VALUES (?, ?)", (str(uuid.uuid4()), payload))
            conn.execute(
                "INSERT INTO outbox (message_id, subject, payload, created_at) VALUES (?, ?, ?, ?)",
                (str(uuid.uuid4()), SUBJECT, payload, datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    finally:
        conn.close()
    return {"commits_per_s": len(latencies) / elapsed, **latency_summary(latencies)}


async def database_cases(bench: Bench, kind: str) -> None:
    counts = {"sqlite": bench.pick(150, 3_000), "postgres": bench.pick(150, 1_500)}
    if kind == "sqlite":

        async def raw() -> Values:
            path = bench.workdir / f"raw-{uuid.uuid4().hex[:8]}.db"
            return raw_sqlite_commits(str(path), bench.pick(1_000, 10_000), time_cap(bench))

        await bench.measure("sqlite.raw_commit", raw)
    try:
        async with bench_engine(kind, bench.workdir, bench.postgres_url) as engine:
            await commits(engine, 50, 1, 5.0)  # warm-up: pool, statement caches

            async def sequential() -> Values:
                return await commits(engine, counts[kind], 1, time_cap(bench))

            async def concurrent() -> Values:
                return await commits(engine, counts[kind], WRITERS, time_cap(bench))

            await bench.measure(f"{kind}.commit", sequential)
            await bench.measure(f"{kind}.commit_{WRITERS}", concurrent)
    except Skip as skip:
        bench.skip(f"{kind}.commit", str(skip))
