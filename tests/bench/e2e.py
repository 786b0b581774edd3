"""End to end: a 5-step agent process with the instant ``echo`` agent, on SQLite and PostgreSQL.

50 clients (quick mode: 10) each trigger an execution and wait for its ``ProcessCompleted`` fact,
again and again, for the whole measurement (full: 3 windows of 10 s = 30 s of
sustained load after a warm-up; quick: one window of 4 s). The warm-up lasts until
each client has seen one execution through (at most 30 s; quick 3 s). Per window:
executions completed per second, step completions per second (``StepCompleted``
facts), and trigger-to-completed latency p50/p99 (from sending TriggerProcess to
the arrival of ``ProcessCompleted`` at a NATS subscriber).

References: a step needs several commits, so ``steps_per_s`` is set beside one
commit of the same database; the latency beside one gRPC round trip.
"""

from __future__ import annotations

from .core import Bench
from .suite import ClosedLoop, RunningSuite, agent_chain, for_each_database

STEPS = 5
CLIENTS = 50  # quick mode: 10


async def run(bench: Bench) -> None:
    await for_each_database(bench, ("sqlite", "postgres"), lambda suite: sustained(bench, suite))


async def sustained(bench: Bench, suite: RunningSuite) -> None:
    name = f"bench-agent-{STEPS}"
    await suite.publish(agent_chain(name, STEPS))
    await suite.check_runs(name)
    case = f"{suite.kind}.agent_{STEPS}"
    references = {
        "steps_per_s": f"floor.{suite.kind}.commit.commits_per_s",
        "latency_p50_ms": "floor.grpc.unary_1.p50_ms",
    }
    window_s = bench.pick(4.0, 10.0)
    clients = bench.pick(10, CLIENTS)
    load = ClosedLoop(suite, name, clients)
    load.start()
    try:
        # Warm-up: until every client has seen one execution through (the steady state).
        await load.warm_up(clients, bench.pick(3.0, 30.0))
        for index in range(bench.repeats):
            window = await load.window(window_s)
            values = window.values()
            bench.record(case, values, references)
            shown = ", ".join(f"{k}={v:,.1f}" for k, v in values.items())
            bench.log(f"  {case} window {index + 1}/{bench.repeats} ({window_s:.0f}s): {shown}")
            if window.failed:
                bench.note(
                    f"{case}: {window.failed} executions did not complete in window {index + 1}"
                )
    finally:
        await load.stop()
    bench.note(
        f"{case}: sustained {bench.repeats * window_s:.0f}s with {clients} executions in flight"
    )
    for error, count in load.errors.items():
        bench.note(f"{case}: {count} x {error}")
