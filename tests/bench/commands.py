"""Commands: TriggerProcess latency and throughput, 1 client and 50 concurrent clients.

The triggered process waits on an hour-long timer, so each execution costs its
trigger and its first step, and nothing afterwards competes with the measurement.
The 50 clients are 50 concurrent callers on one channel, as in the gRPC floor they
are compared with. SQLite in quick mode; SQLite and PostgreSQL in full mode.

``trigger_cpu_ms`` is the CPU of every process of the suite (services, executor,
NATS) while the calls ran, per call: what a trigger costs, whatever the load.
"""

from __future__ import annotations

from .core import Bench, Skip, Values, drive, latency_summary
from .suite import RunningSuite, agent_chain, for_each_database, parked

CLIENTS = 50


async def run(bench: Bench) -> None:
    await for_each_database(
        bench,
        bench.pick(("sqlite",), ("sqlite", "postgres")),
        lambda suite: trigger_cases(bench, suite),
    )


async def trigger_cases(bench: Bench, suite: RunningSuite) -> None:
    name = "bench-parked"
    try:
        await suite.publish(parked(name))
    except Skip as skip:
        bench.note(f"{skip}; triggering a one-step echo process instead")
        name = "bench-one-step"
        await suite.publish(agent_chain(name, 1))
    await suite.trigger(name, retry_for=30)
    for _ in range(20):  # warm-up: channels, caches
        await suite.trigger(name)

    async def triggers(total: int, clients: int) -> Values:
        cpu_before = suite.cpu_seconds()
        count, elapsed, latencies = await drive(
            lambda: suite.trigger(name),
            total=total,
            seconds=bench.pick(2.0, 4.0),
            concurrency=clients,
        )
        cpu_ms = (suite.cpu_seconds() - cpu_before) * 1000
        return {
            "calls_per_s": count / elapsed,
            **latency_summary(latencies),
            "trigger_cpu_ms": cpu_ms / count if count else 0.0,
        }

    async def one_client() -> Values:
        return await triggers(bench.pick(200, 1_000), 1)

    async def many_clients() -> Values:
        return await triggers(bench.pick(500, 3_000), CLIENTS)

    kind = suite.kind
    for case, once, floor in (
        ("trigger_1", one_client, "floor.grpc.unary_1"),
        (f"trigger_{CLIENTS}", many_clients, f"floor.grpc.unary_{CLIENTS}"),
    ):
        await bench.measure(
            f"{kind}.{case}",
            once,
            references={key: f"{floor}.{key}" for key in ("calls_per_s", "p50_ms", "p99_ms")},
        )
