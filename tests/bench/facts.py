"""Facts: the platform's :class:`OutboxRelay`, on SQLite and on PostgreSQL.

* ``<db>.relay_drain``: a backlog of committed outbox rows, published by
  ``drain_once()`` (batches of 500, pipelined): rows acked per second.
  Reference: the pipelined JetStream publish of the floor.
* ``<db>.relay_live`` / ``relay_live_10``: 1 (or 10) writers commit one row + one
  outbox row per transaction as fast as they can and wake the running relay after
  each commit, as a command handler does. ``rows_per_s`` counts rows from the first
  commit until the last one arrives at a NATS subscriber; ``lag_*`` is the time from
  a row's commit until its message arrives (stored and acked by JetStream).
  Reference: the floor's commit of the same transaction, and the ack of one publish.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.outbox import OutboxMessage, add_many_to_outbox
from trinity_platform.relay import OutboxRelay
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import event_source

from .core import Bench, Skip, Values, drive, latency_summary, percentile
from .floor import SUBJECT, WRITERS, commit_one, sample_fact
from .infra import bench_engine, connect_nats, private_nats

SOURCE = event_source("execution")
ARRIVAL_TIMEOUT = 60.0
WRITE_SECONDS = 3.0


async def run(bench: Bench) -> None:
    async with private_nats(bench.workdir) as server:
        setup = await connect_nats(server.url)
        await ensure_streams(setup.jetstream())
        await setup.close()
        for kind in ("sqlite", "postgres"):
            try:
                async with bench_engine(kind, bench.workdir, bench.postgres_url) as engine:
                    await relay_cases(bench, kind, engine, server.url)
            except Skip as skip:
                bench.skip(f"{kind}.relay", str(skip))


async def relay_cases(bench: Bench, kind: str, engine: AsyncEngine, nats_url: str) -> None:
    relay_nc = await connect_nats(nats_url)
    watch_nc = await connect_nats(nats_url)
    try:
        await _cases(bench, kind, engine, relay_nc, watch_nc)
    finally:
        await relay_nc.close()
        await watch_nc.close()


async def _cases(bench: Bench, kind: str, engine: AsyncEngine, relay_nc, watch_nc) -> None:  # type: ignore[no-untyped-def]
    async def drain() -> Values:
        total = bench.pick(1_000, 10_000)
        for start in range(0, total, 500):
            async with engine.begin() as conn:
                await add_many_to_outbox(
                    conn,
                    [
                        OutboxMessage(sample_fact(i), SUBJECT, aggregate_id=str(uuid.uuid4()))
                        for i in range(start, min(start + 500, total))
                    ],
                )
        relay = OutboxRelay(engine, relay_nc, SOURCE, retention=None)
        started = time.perf_counter()
        published = await relay.drain_once()
        elapsed = time.perf_counter() - started
        if published != total:
            raise RuntimeError(f"relay published {published} of {total}")
        return {"rows_per_s": total / elapsed}

    arrivals: dict[str, float] = {}

    async def on_message(msg: Msg) -> None:
        arrivals[(msg.headers or {}).get("Nats-Msg-Id", "")] = time.perf_counter()

    subscription = await watch_nc.subscribe(SUBJECT, cb=on_message)
    await watch_nc.flush()

    async def live(writers: int) -> Values:
        total = bench.pick(300, 2_000)
        arrivals.clear()
        committed: dict[str, float] = {}
        relay = OutboxRelay(engine, relay_nc, SOURCE, retention=None, poll_interval=1.0)
        relay.start()

        async def write() -> None:
            message_id = await commit_one(engine, 0)
            committed[message_id] = time.perf_counter()
            relay.wake()

        try:
            started = time.perf_counter()
            await drive(
                write, total=total, seconds=bench.pick(1.5, WRITE_SECONDS), concurrency=writers
            )
            missing = set(committed)
            deadline = time.perf_counter() + ARRIVAL_TIMEOUT
            while missing:
                missing = {m for m in missing if m not in arrivals}
                if missing and time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"{len(missing)} of {len(committed)} messages did not arrive"
                        f" in {ARRIVAL_TIMEOUT}s"
                    )
                await asyncio.sleep(0.005)
        finally:
            await relay.stop(flush=False)
        lags = [arrivals[m] - t for m, t in committed.items()]
        last = max(arrivals[m] for m in committed)
        return {
            "rows_per_s": len(committed) / (last - started),
            **latency_summary(lags, "lag_"),
            "lag_max_ms": percentile(lags, 100) * 1000,
        }

    async def live_1() -> Values:
        return await live(1)

    async def live_n() -> Values:
        return await live(WRITERS)

    try:
        await bench.measure(
            f"{kind}.relay_drain",
            drain,
            references={"rows_per_s": "floor.jetstream.publish_pipelined.msgs_per_s"},
        )
        await bench.measure(
            f"{kind}.relay_live",
            live_1,
            references={
                "rows_per_s": f"floor.{kind}.commit.commits_per_s",
                "lag_p50_ms": "floor.jetstream.publish_ack.p50_ms",
            },
        )
        await bench.measure(
            f"{kind}.relay_live_{WRITERS}",
            live_n,
            references={
                "rows_per_s": f"floor.{kind}.commit_{WRITERS}.commits_per_s",
                "lag_p50_ms": "floor.jetstream.publish_ack.p50_ms",
            },
        )
    finally:
        await subscription.unsubscribe()
