"""Scaling: does the cost of a step grow with the size of a process or with the load?

* ``steps_<n>``: one execution of a process of ``n`` echo steps in sequence
  (full: 10, 100, 1,000; quick: 10, 20, 50); ``per_step_ms`` = trigger-to-completed
  time / ``n``; ``step_cpu_ms`` = CPU of the suite meanwhile / ``n``, and
  ``step_cpu_net_ms`` the same less the idle suite's CPU over that time. Reference:
  the smallest process, so the ratio shows the growth.
* ``active_<n>``: with ``n`` executions active at once (full: 10, 1,000, 10,000;
  quick: 10, 50, 200), parked in turn on an hour-long timer, an approval nobody gives
  and a message nobody sends, 10 clients run the 5-step echo process in a closed
  loop; ``step_cpu_ms`` per step completed, ``per_step_ms`` = 1000 / step completions
  per second, ``idle_cpu_pct`` = the suite's CPU (% of one core) with only the parked
  executions (pollers, housekeeping). Reference: the fewest active executions.

On SQLite (the embedded default), one suite for both parts. The largest process
runs last, with the time left in the group's budget; a process that does not finish
in time is measured by the steps it finished, with a note.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc

from .core import Bench, Skip, Values
from .suite import (
    ClosedLoop,
    RunningSuite,
    agent_chain,
    for_each_database,
    parked,
    parked_on_approval,
    parked_on_message,
)

PROBE_CLIENTS = 10
PROBE_STEPS = 5
PARK_CLIENTS = 50
# What the active executions wait on, in turn: a timer, an approval, a message.
PARKED = {
    "bench-parked": parked,
    "bench-parked-approval": parked_on_approval,
    "bench-parked-message": parked_on_message,
}
IDLE_SECONDS = 3.0
# Below this (ms of CPU per second, 20 % of a core) the suite is doing no work of its own.
QUIET_MS_PER_S = 200.0


async def idle_cpu_ms_per_s(suite: RunningSuite, seconds: float = IDLE_SECONDS) -> float:
    """CPU ms the suite spends per second with nothing to do but its pollers and
    housekeeping (reported as idle_cpu_pct: % of one core)."""
    before, started = suite.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    return (suite.cpu_seconds() - before) * 1000 / (time.perf_counter() - started)


async def run(bench: Bench) -> None:
    async def both(suite: RunningSuite) -> None:
        sizes: tuple[int, ...] = bench.pick((10, 20, 50), (10, 100, 1_000))
        prepared = await prepare_sizes(bench, suite, sizes)
        if prepared:
            for size in sizes[:-1]:
                await process_size(bench, suite, size, sizes[0])
        await active_executions(bench, suite)
        if prepared:
            # The largest last, with the time that is left: it may not finish (noted).
            await process_size(bench, suite, sizes[-1], sizes[0])

    await for_each_database(bench, ("sqlite",), both)


async def prepare_sizes(bench: Bench, suite: RunningSuite, sizes: tuple[int, ...]) -> bool:
    try:
        for size in sizes:
            await suite.publish(agent_chain(f"bench-chain-{size}", size))
        await suite.check_runs(f"bench-chain-{sizes[0]}")
    except Skip as skip:
        bench.skip("steps", str(skip))
        return False
    return True


async def process_size(bench: Bench, suite: RunningSuite, size: int, smallest: int) -> None:
    name = f"bench-chain-{size}"
    idle = await idle_cpu_ms_per_s(suite)
    timeout = min(bench.pick(10.0 + size * 0.1, 30.0 + size * 0.12), bench.time_left() - 5)
    if timeout < 5:
        bench.skip(f"steps_{size}", "no time left in the group's budget")
        return

    async def once() -> Values:
        cpu_before = suite.cpu_seconds()
        started = time.perf_counter()
        execution_id = await suite.trigger(name)
        done = suite.tracker.expect(execution_id)
        try:
            fact, finished = await asyncio.wait_for(done, timeout)
        except TimeoutError:
            suite.tracker.forget(execution_id)
            execution = await suite.status(execution_id)
            steps = execution.progress.finished
            if not steps:
                raise
            bench.note(f"steps_{size}: only {steps} of {size} steps done after {timeout:.0f}s")
            return cpu_figures(cpu_before, timeout, steps)
        if fact != "ProcessCompleted":
            raise RuntimeError(f"execution ended with {fact}")
        return cpu_figures(cpu_before, finished - started, size)

    def cpu_figures(cpu_before: float, seconds: float, steps: int) -> Values:
        cpu_ms = (suite.cpu_seconds() - cpu_before) * 1000
        return {
            "per_step_ms": seconds / steps * 1000,
            # CPU of every process of the suite while the execution ran, per step; and
            # the same less what the idle suite spends in that time (its pollers): one
            # execution alone leaves the suite mostly idle, so growth shows in the net.
            "step_cpu_ms": cpu_ms / steps,
            "step_cpu_net_ms": max(cpu_ms - idle * seconds, 0.0) / steps,
            "idle_cpu_pct": idle / 10,
        }

    repeats = bench.repeats if size == smallest else min(2, bench.repeats) if size <= 100 else 1
    await bench.measure(
        f"steps_{size}",
        once,
        repeats=repeats,
        references=None
        if size == smallest
        else {
            key: f"scaling.steps_{smallest}.{key}"
            for key in ("per_step_ms", "step_cpu_ms", "step_cpu_net_ms")
        },
    )


async def park(suite: RunningSuite, first: int, count: int, deadline: float, ids: list[str]) -> int:
    """Start ``count`` executions of the parked processes in turn, the ``first``-th first
    (until ``deadline``); how many started."""
    names = list(PARKED)
    remaining = count
    started = 0

    async def client() -> None:
        nonlocal remaining, started
        while remaining > 0 and time.monotonic() < deadline:
            remaining -= 1
            name = names[(first + remaining) % len(names)]
            try:
                ids.append(await suite.trigger(name))
                started += 1
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)

    await asyncio.gather(*(client() for _ in range(PARK_CLIENTS)))
    return started


async def active_executions(bench: Bench, suite: RunningSuite) -> None:
    levels: tuple[int, ...] = bench.pick((10, 50, 200), (10, 1_000, 10_000))
    probe = f"bench-agent-{PROBE_STEPS}"
    parked_ids: list[str] = []
    try:
        for name, spec in PARKED.items():
            await suite.publish(spec(name))
        await suite.publish(agent_chain(probe, PROBE_STEPS))
        await suite.check_runs(probe)
        for name in PARKED:
            parked_ids.append(await suite.trigger(name, retry_for=15))
    except Skip as skip:
        bench.skip("active", str(skip))
        return
    active = len(PARKED)
    parking_left = bench.pick(10.0, 120.0)  # seconds, for all levels together
    for level in levels:
        parking = time.monotonic()
        active += await park(suite, active, level - active, parking + parking_left, parked_ids)
        parking_left -= time.monotonic() - parking
        bench.log(f"  parked {active} executions ({time.monotonic() - parking:.1f}s)")
        # Parking leaves work behind (approvals being requested, facts in the outbox):
        # the idle figure waits until the suite is quiet.
        idle = await settled_idle(suite)
        if active < level:
            bench.note(f"active_{level}: only {active} executions parked in the time allowed")
        case = f"active_{level}"
        references = (
            None
            if level == levels[0]
            else {
                key: f"scaling.active_{levels[0]}.{key}"
                for key in ("per_step_ms", "step_cpu_ms", "latency_p50_ms", "idle_cpu_pct")
            }
        )
        load = ClosedLoop(suite, probe, PROBE_CLIENTS)
        load.start()
        try:
            await load.warm_up(PROBE_CLIENTS, bench.pick(3.0, 15.0))
            for _ in range(bench.repeats):
                window = await load.window(bench.pick(2.5, 5.0))
                values = window.values()
                steps_per_s = values["steps_per_s"]
                bench.record(
                    case,
                    {
                        "per_step_ms": 1000.0 / steps_per_s if steps_per_s else float("nan"),
                        "steps_per_s": steps_per_s,
                        "step_cpu_ms": values["step_cpu_ms"],
                        "latency_p50_ms": values["latency_p50_ms"],
                        "fact_lag_p99_ms": values.get("fact_lag_p99_ms", float("nan")),
                        "idle_cpu_pct": idle / 10,
                    },
                    references,
                )
                bench.log(f"  {case}: {steps_per_s:,.1f} steps/s")
        finally:
            await load.stop()
        for error, count in load.errors.items():
            bench.note(f"{case}: {count} x {error}")
    # Exact: a terminal fact of a parked execution (none should come within the hour).
    ended = Counter(fact for fact in map(suite.tracker.ended, parked_ids) if fact is not None)
    if ended:
        shown = ", ".join(f"{count} {fact}" for fact, count in ended.items())
        bench.note(f"parked executions that ended early (they should wait an hour): {shown}")


async def settled_idle(suite: RunningSuite, tries: int = 20) -> float:
    """The idle CPU rate once the suite is quiet: two measurements in a row that agree
    (within 20 %, or 5 ms/s) and are below QUIET_MS_PER_S. Two readings agree as well
    while a steady backlog (what parking left behind) is worked off, so that alone is
    not idle; after ``tries`` the last reading is taken as it is."""
    last = await idle_cpu_ms_per_s(suite)
    for _ in range(tries):
        now = await idle_cpu_ms_per_s(suite)
        if abs(now - last) <= max(0.2 * last, 5.0) and max(now, last) < QUIET_MS_PER_S:
            return min(now, last)
        last = now
    return last
