"""SQL statements and transactions per completed step, by service (issue 14 §5).

A 5-step chain of instant agent steps runs through the real suite on SQLite; each
service's ``trinity_db_statements_total`` and ``trinity_db_transactions_total`` (from
its /metrics) are read before and after a batch of executions, and the difference is
divided by the steps completed. Counts, not timings: the same work sends the same
statements whatever the machine's speed, except the pollers' (timer poller, dispatcher
and relay probes), which send a few per second whether anything runs or not: their
rate is read over an idle spell of the suite and taken off (``net``), and the bounds
leave room for what is left of them. The figures are printed (``-s``) so a change can
be judged by them; a bound that fails means the hot path got more statements per step.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator

import nats
import pytest
from nats.aio.msg import Msg
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Client
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.subjects import fact_subject
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port

pytestmark = pytest.mark.e2e

STEPS = 5
EXECUTIONS = 8
MEASURED = ("execution", "work")
IDLE_SPELL = 3.0  # seconds over which the pollers' own statements are counted
# Upper bounds per completed step (net), with room for what is left of the pollers.
# Measured (SQLite, one at a time): before the request match was read with the execution
# and the dispatcher claimed in one statement without a probe when woken, execution 14.4
# statements / 8.6 transactions; after, 11.4 / 6.6; work 12.9 / 5.9. Facts applied a
# fetched batch at a time (one execution at a time here: batches of one): 11.2 / 6.4.
# Work's commands remember their key without looking it up first: work 10.9 / 5.9.
# Each step's state in a row of its own (read in the execution's statement, written only
# for the steps a decision changed: one more statement per decision): 12.7 / 6.7.
# TriggerProcess remembers its key without looking it up first: one statement fewer per
# execution (0.2 per step).
BOUNDS = {
    "execution": {"statements": 13.3, "transactions": 7.0},
    "work": {"statements": 12.0, "transactions": 6.7},
}

CHAIN = "\n".join(
    ["name: counted", "steps:"]
    + [
        f"  - id: s{index}\n    agent_task: {{agent: echo, message: 'step {index}'}}"
        + (f"\n    depends_on: [s{index - 1}]" if index else "")
        for index in range(STEPS)
    ]
)


@pytest.fixture(scope="module")
def counted_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSuite, str]]:
    root = tmp_path_factory.mktemp("counted")
    nats_server = NatsServer(root / "nats")
    nats_server.start()
    config = root / "executor.yaml"
    config.write_text("agents:\n  echo:\n    backend: script\n    file: replies.yaml\n")
    (root / "replies.yaml").write_text('replies:\n  - output: "done: {message}"\n')
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=nats_server.url,
        ports={service: free_port() for service in SERVICES},
        metrics_ports={service: free_port() for service in MEASURED},
        executor_config=config,
        # The sampled gauges query every few seconds in bursts an idle spell may or may
        # not catch: out of the count altogether.
        extra_env={"TRINITY_METRICS_INTERVAL": "3600"},
    )
    try:
        suite.start()
        suite.wait_healthy(90)
        yield suite, nats_server.url
    finally:
        suite.stop()
        nats_server.stop()


def counts(port: int) -> dict[str, float]:
    """Statements and transactions (commits + rollbacks) so far, from one /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = {"statements": 0.0, "transactions": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trinity_db_statements_total":
                found["statements"] += sample.value
            elif sample.name == "trinity_db_transactions_total":
                found["transactions"] += sample.value
    return found


async def run_batch(client: Client, nats_url: str, executions: int) -> None:
    """Run ``executions`` of the chain one after another, each until it has completed (its
    ExecutionCompleted fact seen on NATS: no polling of the service being counted)."""
    nc = await nats.connect(nats_url)
    seen: list[str] = []
    more = asyncio.Condition()

    async def on_fact(msg: Msg) -> None:
        async with more:
            seen.append(msg.subject)
            more.notify_all()

    async def until(count: int) -> None:
        async with more:
            await more.wait_for(lambda: len(seen) >= count)

    subscription = await nc.subscribe(fact_subject("execution", "ProcessCompleted"), cb=on_fact)
    try:
        await nc.flush()
        # One at a time: nothing is batched by chance (the dispatcher's and the relay's
        # batches depend on what else is in flight), so the counts repeat.
        for number in range(executions):
            execution_id = await client.trigger("counted")
            try:
                await asyncio.wait_for(until(number + 1), timeout=60)
            except TimeoutError:
                raise AssertionError(f"not completed: {await client.get(execution_id)}") from None
    finally:
        await subscription.unsubscribe()
        await nc.close()


async def test_statements_and_transactions_per_step(
    counted_suite: tuple[LocalSuite, str],
) -> None:
    suite, nats_url = counted_suite
    client = Client(suite)
    try:
        await client.publish(CHAIN)
        await run_batch(client, nats_url, 2)  # caches and connections warm
        ports = suite.metrics_ports
        idle_from = {service: counts(ports[service]) for service in MEASURED}
        idle_started = time.monotonic()
        await asyncio.sleep(IDLE_SPELL)  # measuring the pollers' rate, not waiting for them
        idle_to = {service: counts(ports[service]) for service in MEASURED}
        idle_seconds = time.monotonic() - idle_started
        before = {service: counts(ports[service]) for service in MEASURED}
        started = time.monotonic()
        await run_batch(client, nats_url, EXECUTIONS)
        elapsed = time.monotonic() - started
        after = {service: counts(ports[service]) for service in MEASURED}
    finally:
        await client.close()
    steps = EXECUTIONS * STEPS
    gross, per_step = {}, {}
    for service in MEASURED:
        gross[service], per_step[service] = {}, {}
        for what in ("statements", "transactions"):
            idle_rate = (idle_to[service][what] - idle_from[service][what]) / idle_seconds
            total = after[service][what] - before[service][what]
            gross[service][what] = total / steps
            per_step[service][what] = max(0.0, total - idle_rate * elapsed) / steps
    print(f"\nper completed step ({EXECUTIONS} executions x {STEPS} steps, {elapsed:.2f} s):")
    for service, figures in per_step.items():
        print(
            f"  {service:10s} net {figures['statements']:5.2f} statements"
            f" {figures['transactions']:5.2f} transactions"
            f" (gross {gross[service]['statements']:5.2f} / {gross[service]['transactions']:5.2f})"
        )
    for service, bounds in BOUNDS.items():
        for what, bound in bounds.items():
            assert per_step[service][what] <= bound, (service, what, per_step[service], bound)
