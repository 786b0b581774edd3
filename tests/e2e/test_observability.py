"""What an operator can see of a running suite: metrics, traces and logs.

One suite (SQLite) runs an agent step followed by a human approval; every process
serves /metrics, exports its spans over OTLP to a collector the test runs, and
logs JSON lines to its log file.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Client
from trinity.process.approval.v1 import approval_pb2
from trinity.process.execution.v1 import execution_pb2
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port

pytestmark = pytest.mark.e2e

APPROVER_TOKEN = "observe-approver-secret-4d1f"
EXECUTOR_TOKEN = "observe-executor-secret-9b2c"
PROCESS = """
name: observed
steps:
  - id: research
    agent_task: {agent: echo, message: "Research {{ input.topic }}"}
  - id: review
    depends_on: [research]
    human_approval: {approvers: [reviewer@example.com]}
    timeout: 1h
"""
PROCESSES = (*SERVICES, "executor-0")


@pytest.fixture(scope="module")
def observed_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSuite]:
    root = tmp_path_factory.mktemp("observed")
    nats_server = NatsServer(root / "nats")
    nats_server.start()
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=nats_server.url,
        ports={service: free_port() for service in SERVICES},
        metrics_ports={name: free_port() for name in PROCESSES},
        extra_env={
            "TRINITY_AUTH_TOKENS": f"{APPROVER_TOKEN}=reviewer@example.com,"
            f"{EXECUTOR_TOKEN}=executor@example.com",
            "TRINITY_EXECUTOR_TOKEN": EXECUTOR_TOKEN,
            "TRINITY_METRICS_INTERVAL": "0.2",
            "TRINITY_LOG_FORMAT": "json",
            "TRINITY_LOG_LEVEL": "DEBUG",
        },
    )
    try:
        suite.start()
        suite.wait_healthy(90)
        yield suite
    finally:
        suite.stop()
        nats_server.stop()


@pytest.fixture
async def api(observed_suite: LocalSuite) -> AsyncIterator[Client]:
    client = Client(observed_suite)
    yield client
    await client.close()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one /metrics endpoint: (name, sorted labels) → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


async def scrape_until(
    port: int, name: str, at_least: float, timeout: float = 30.0, **labels: str
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = total(await asyncio.to_thread(scrape, port), name, **labels)
        if value >= at_least:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}{labels} stayed at {value} (< {at_least}) on :{port}")
        await asyncio.sleep(0.1)


async def run_observed(api: Client) -> str:
    """Trigger the process, approve its review, wait until it completed; its id."""
    execution_id = await api.trigger("observed", topic="metrics")
    approval = await api.pending_approval(execution_id)
    await api.decide(approval.id, approval_pb2.DECISION_APPROVE, APPROVER_TOKEN)
    done = await api.wait(execution_id)
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED, done
    return execution_id


async def test_every_process_serves_metrics_that_move_during_an_execution(
    api: Client, observed_suite: LocalSuite
) -> None:
    await api.publish(PROCESS)
    ports = observed_suite.metrics_ports
    before = {name: await asyncio.to_thread(scrape, ports[name]) for name in PROCESSES}

    execution_id = await api.trigger("observed", topic="metrics")
    # While the review waits, the approval service reports it pending, the execution
    # service one running execution.
    await scrape_until(ports["approval"], "trinity_approvals_pending", 1)
    await scrape_until(ports["execution"], "trinity_executions", 1, status="running")
    approval = await api.pending_approval(execution_id)
    await api.decide(approval.id, approval_pb2.DECISION_APPROVE, APPROVER_TOKEN)
    done = await api.wait(execution_id)
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    await scrape_until(
        ports["approval"], "trinity_approvals_pending", 0, timeout=0
    )  # the name exists
    deadline = time.monotonic() + 30
    while total(await asyncio.to_thread(scrape, ports["approval"]), "trinity_approvals_pending"):
        assert time.monotonic() < deadline, "the decided approval is still counted pending"
        await asyncio.sleep(0.1)

    after = {name: await asyncio.to_thread(scrape, ports[name]) for name in PROCESSES}

    def moved(process: str, name: str, by: float = 1, **labels: str) -> None:
        delta = total(after[process], name, **labels) - total(before[process], name, **labels)
        assert delta >= by, f"{process}: {name}{labels} moved by {delta}, expected ≥ {by}"

    execution = "execution"
    moved(
        execution,
        "trinity_grpc_server_handled_total",
        method="/trinity.process.execution.v1.ExecutionService/TriggerProcess",
        code="OK",
    )
    moved(
        execution,
        "trinity_grpc_server_handling_seconds_count",
        method="/trinity.process.execution.v1.ExecutionService/TriggerProcess",
    )
    moved(execution, "trinity_executions_started_total")
    moved(execution, "trinity_executions_finished_total", status="completed")
    moved(execution, "trinity_steps_started_total", kind="agent_task")
    moved(execution, "trinity_steps_started_total", kind="human_approval")
    moved(execution, "trinity_steps_completed_total", kind="agent_task")
    moved(execution, "trinity_step_duration_seconds_count", kind="human_approval")
    moved(execution, "trinity_dispatch_total", kind="request_work", outcome="sent")
    moved(execution, "trinity_dispatch_total", kind="request_approval", outcome="sent")
    moved(
        execution, "trinity_consumer_messages_total", consumer="execution-work-facts", outcome="ack"
    )
    moved(execution, "trinity_consumer_lag_seconds_count", consumer="execution-approval-facts")
    moved(execution, "trinity_outbox_published_total", by=6)
    moved(execution, "trinity_outbox_publish_lag_seconds_count", by=6)
    moved(execution, "trinity_db_transactions_total", outcome="commit", by=3)
    assert ("trinity_dispatch_backlog", (("kind", "request_work"),)) in after[execution]
    assert ("trinity_timers_due", ()) in after[execution]
    assert ("trinity_outbox_backlog", ()) in after[execution]

    moved(
        "work",
        "trinity_grpc_server_handled_total",
        method="/trinity.process.work.v1.WorkService/RecordWorkCompleted",
        code="OK",
    )
    moved("work", "trinity_work_queue_wait_seconds_count", kind="agent_task")
    moved("work", "trinity_work_finished_total", kind="agent_task", status="completed")
    moved("work", "trinity_outbox_published_total", by=4)  # requested, intent, started, completed
    moved(
        "approval",
        "trinity_grpc_server_handled_total",
        method="/trinity.process.approval.v1.ApprovalService/SubmitDecision",
        code="OK",
    )
    moved("approval", "trinity_outbox_published_total", by=2)
    moved("executor-0", "trinity_executor_jobs_total", kind="agent_task", outcome="completed")
    moved("executor-0", "trinity_executor_job_seconds_count", kind="agent_task")
    moved(
        "executor-0",
        "trinity_consumer_messages_total",
        consumer="work-executor-agent_task",
        outcome="ack",
    )
    # Refused calls are counted with their code.
    with pytest.raises(grpc.aio.AioRpcError):
        await api.get("no-such-execution")
    refused = await asyncio.to_thread(scrape, ports[execution])
    assert total(refused, "trinity_grpc_server_handled_total", code="NOT_FOUND") >= 1
