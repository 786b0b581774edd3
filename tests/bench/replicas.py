"""Does a second execution replica add throughput? (issue 19 §3)

On PostgreSQL: the 5-step agent process under a closed loop with one execution replica,
then with a second one started beside it (same database and NATS: it shares the fact
consumers, the dispatcher's claims and the timers); the clients then reach both
replicas through the platform's round_robin channel. Figures per replica count:
``steps_per_s`` and ``step_cpu_ms`` (every process of the suite, the new replica too).
On a machine whose cores the suite already fills, a second replica can only add
overhead; the figure says what this machine gives.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity_platform.channels import open_channel
from trinity_platform.testing import free_port

from .core import Bench
from .suite import ClosedLoop, RunningSuite, agent_chain, for_each_database

STEPS = 5
CLIENTS = 50  # quick mode: 10


async def run(bench: Bench) -> None:
    await for_each_database(bench, ("postgres",), lambda suite: compare(bench, suite))


async def measure(bench: Bench, suite: RunningSuite, name: str, case: str) -> None:
    clients = bench.pick(10, CLIENTS)
    load = ClosedLoop(suite, name, clients)
    load.start()
    try:
        await load.warm_up(clients, bench.pick(5.0, 30.0))
        for _ in range(bench.repeats):
            values = (await load.window(bench.pick(5.0, 10.0))).values()
            bench.record(case, {k: values[k] for k in ("steps_per_s", "step_cpu_ms")})
            bench.log(
                f"  {case}: {values['steps_per_s']:,.1f} steps/s, {values['step_cpu_ms']:.1f} ms CPU/step"
            )
    finally:
        await load.stop()


async def compare(bench: Bench, suite: RunningSuite) -> None:
    name = f"bench-replicas-{STEPS}"
    await suite.publish(agent_chain(name, STEPS))
    await suite.check_runs(name)
    await measure(bench, suite, name, "postgres.execution_replicas_1")
    local = suite.local
    first_port = local.ports["execution"]
    second_port = free_port()
    process = local.start_replica("execution", 2, second_port)
    await asyncio.to_thread(local.wait_serving, second_port, process)
    suite.pids[process] = local._procs[process].pid
    channel = open_channel(f"127.0.0.1:{first_port},127.0.0.1:{second_port}")
    try:
        both = replace(suite, executions=ExecutionServiceStub(channel))
        await measure(bench, both, name, "postgres.execution_replicas_2")
    finally:
        await channel.close()
