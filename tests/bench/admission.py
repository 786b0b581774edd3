"""Bounded admission under overload: 50 clients triggering as fast as they are let.

The suite runs with ``TRINITY_EXECUTION_MAX_IN_PROGRESS=BOUND``. Each of 50 clients
triggers the 5-step echo process again and again without waiting for the
executions it started (an open loop: far more than the suite can complete); a
refusal (RESOURCE_EXHAUSTED, ``ADMISSION_LIMIT``) makes it wait the ``RetryInfo``
delay. After the window the clients stop and every admitted execution is awaited.

Figures: triggers admitted and refused per second, executions completed per second
during the load, latency from admission to ``ProcessCompleted`` (p50, p99, max:
bounded by about BOUND / completion rate), and ``lost``: admitted executions that
never completed (must be 0). Without the bound (issue 13) 50 clients were admitted
88 triggers/s against ~9/s completed and nothing completed during the load.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack

import grpc

from trinity.process.execution.v1 import execution_service_pb2
from trinity_platform.grpc_errors import error_details, retry_delay

from .core import Bench, percentile
from .suite import RunningSuite, agent_chain, new_id, start_suite

BOUND = 50
CLIENTS = 50
STEPS = 5
DRAIN_TIMEOUT = 180.0


async def run(bench: Bench) -> None:
    env = {"TRINITY_EXECUTION_MAX_IN_PROGRESS": str(BOUND)}
    async with AsyncExitStack() as stack:
        suite = await start_suite(bench, "sqlite", stack, env)
        name = f"bench-admission-{STEPS}"
        await suite.publish(agent_chain(name, STEPS))
        await suite.check_runs(name)
        await bench.measure(
            "sqlite.overload_50_clients",
            lambda: overload(bench, suite, name, bench.pick(8.0, 30.0)),
        )
    bench.note(
        f"sqlite.overload_50_clients: bound {BOUND} executions in progress, {CLIENTS} clients "
        f"in an open loop, {STEPS}-step echo process"
    )


async def overload(
    bench: Bench, suite: RunningSuite, name: str, seconds: float
) -> dict[str, float]:
    admitted: dict[str, float] = {}  # execution id -> when TriggerProcess answered
    finished: dict[str, tuple[str, float]] = {}
    answers: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    started = loop.time()
    ends = started + seconds
    waiters: list[asyncio.Task[None]] = []

    async def follow(execution_id: str) -> None:
        finished[execution_id] = await suite.tracker.expect(execution_id)

    async def client() -> None:
        while loop.time() < ends:
            request = execution_service_pb2.TriggerProcessRequest(
                request_id=new_id(), process_name=name, triggered_by="bench"
            )
            try:
                reply = await suite.executions.TriggerProcess(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                reason = error_details(exc)[0] or exc.code().name
                answers[reason] += 1
                await asyncio.sleep(retry_delay(exc) or 0.5)
                continue
            answers["admitted"] += 1
            admitted[reply.execution.id] = time.perf_counter()
            waiters.append(asyncio.create_task(follow(reply.execution.id)))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    load_ended = time.perf_counter()
    completed_during_load = sum(1 for _, at in finished.values() if at <= load_ended)
    _, pending = await asyncio.wait(waiters, timeout=DRAIN_TIMEOUT) if waiters else ((), ())
    for task in pending:
        task.cancel()
    latencies = [
        at - admitted[execution_id]
        for execution_id, (fact, at) in finished.items()
        if fact == "ProcessCompleted"
    ]
    other = {k: v for k, v in answers.items() if k not in ("admitted", "ADMISSION_LIMIT")}
    if other:
        bench.note(f"overload: other answers {dict(other)}")
    return {
        "admitted_per_s": answers["admitted"] / seconds,
        "refused_per_s": answers["ADMISSION_LIMIT"] / seconds,
        "completed_per_s": completed_during_load / seconds,
        "latency_p50_ms": percentile(latencies, 50) * 1000,
        "latency_p99_ms": percentile(latencies, 99) * 1000,
        "latency_max_ms": max(latencies, default=float("nan")) * 1000,
        "lost": float(len(admitted) - len(latencies)),
    }
