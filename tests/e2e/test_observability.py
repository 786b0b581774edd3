"""What an operator can see of a running suite: metrics, traces and logs.

One suite (SQLite) runs an agent step followed by a human approval; every process
serves /metrics, exports its spans over OTLP to a collector the test runs, and
logs JSON lines to its log file.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Client
from trinity.process.approval.v1 import approval_pb2
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.authz import parse_auth_tokens
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port

pytestmark = pytest.mark.e2e

APPROVER_TOKEN = "observe-approver-secret-4d1f"
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


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        received = []
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    received.append(
                        ReceivedSpan(
                            service,
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    import grpc as sync_grpc

    servicer = Collector()
    server = sync_grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@pytest.fixture(scope="module")
def observed_suite(
    tmp_path_factory: pytest.TempPathFactory, collector: tuple[Collector, int]
) -> Iterator[LocalSuite]:
    root = tmp_path_factory.mktemp("observed")
    nats_server = NatsServer(root / "nats")
    nats_server.start()
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=nats_server.url,
        ports={service: free_port() for service in SERVICES},
        metrics_ports={name: free_port() for name in PROCESSES},
        extra_env={
            # The suite adds its own service, executor and admin tokens.
            "TRINITY_AUTH_TOKENS": f"{APPROVER_TOKEN}=reviewer@example.com",
            "TRINITY_METRICS_INTERVAL": "0.2",
            "TRINITY_LOG_FORMAT": "json",
            "TRINITY_LOG_LEVEL": "DEBUG",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector[1]}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
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
    # (counted as the call ends, which may be just after the client saw the status)
    await scrape_until(ports[execution], "trinity_grpc_server_handled_total", 1, code="NOT_FOUND")


WORK = "/trinity.process.work.v1.WorkService/"
TRIGGER = "/trinity.process.execution.v1.ExecutionService/TriggerProcess"
REQUEST_APPROVAL = "/trinity.process.approval.v1.ApprovalService/RequestApproval"


def traced(api: Client, traceparent: str) -> tuple[tuple[str, str], ...]:
    """The call's metadata: the test's own trace context beside the admin token."""
    return (("traceparent", traceparent), ("authorization", f"Bearer {api.suite.admin_token}"))


async def test_one_trace_follows_a_step_across_every_service(
    api: Client, collector: tuple[Collector, int]
) -> None:
    """TriggerProcess → dispatch → RequestWork → intent → executor → RecordWorkCompleted → fact →
    consumer → the next step's dispatch → RequestApproval: one trace, each span the
    child of the one that caused it. (Instant work is reported in one call,
    RecordWorkCompleted with its start, so no RecordWorkStarted span is awaited.)"""
    spans_of, _port = collector
    await api.publish(PROCESS)
    trace_id, root_id = secrets.token_hex(16), secrets.token_hex(8)
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=api.key("traced"), process_name="observed"
    )
    request.input.update({"topic": "traces"})
    reply = await api.executions.TriggerProcess(
        request, metadata=traced(api, f"00-{trace_id}-{root_id}-01")
    )
    await api.pending_approval(reply.execution.id)

    def find(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan | None:
        return next((s for s in spans if s.service == service and s.name == name), None)

    wanted = [
        ("trinity-execution", TRIGGER),
        ("trinity-execution", "dispatch request_work"),
        ("trinity-work", WORK + "RequestWork"),
        ("trinity-executor", "consume WorkExecutionRequested"),
        ("trinity-executor", "execute agent_task"),
        ("trinity-work", WORK + "RecordWorkCompleted"),
        ("trinity-execution", "consume WorkCompleted"),
        ("trinity-execution", "dispatch request_approval"),
        ("trinity-approval", REQUEST_APPROVAL),
    ]
    deadline = time.monotonic() + 30
    while True:
        spans = spans_of.of_trace(trace_id)
        missing = [w for w in wanted if find(spans, *w) is None]
        if not missing:
            break
        assert time.monotonic() < deadline, f"spans missing: {missing}; got {spans}"
        await asyncio.sleep(0.1)

    by_id = {s.span_id: s for s in spans}

    def parent(span: ReceivedSpan) -> ReceivedSpan:
        assert span.parent_id in by_id, f"{span} has a parent outside the trace"
        return by_id[span.parent_id]

    def ancestors(span: ReceivedSpan) -> list[str]:
        chain = []
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            chain.append(span.name)
        return chain

    trigger = find(spans, "trinity-execution", TRIGGER)
    assert trigger is not None and trigger.parent_id == root_id
    every = {w: find(spans, *w) for w in wanted}
    dispatch_work = every["trinity-execution", "dispatch request_work"]
    request_work = every["trinity-work", WORK + "RequestWork"]
    intent = every["trinity-executor", "consume WorkExecutionRequested"]
    job = every["trinity-executor", "execute agent_task"]
    completed = every["trinity-work", WORK + "RecordWorkCompleted"]
    fact = every["trinity-execution", "consume WorkCompleted"]
    dispatch_approval = every["trinity-execution", "dispatch request_approval"]
    request_approval = every["trinity-approval", REQUEST_APPROVAL]
    assert dispatch_work and parent(dispatch_work) == trigger
    # The execution's client span sits between its dispatcher and the work service.
    assert request_work and parent(parent(request_work)) == dispatch_work
    assert intent and parent(intent) == request_work
    assert job and parent(job) == intent
    assert completed and "execute agent_task" in ancestors(completed)
    assert fact and parent(fact) == completed
    # A fact that raced its dispatch's reply is consumed again (a second consume span):
    # the approval's dispatch follows one of the WorkCompleted consumptions.
    assert dispatch_approval
    consumed = parent(dispatch_approval)
    assert consumed and consumed.name == "consume WorkCompleted" and parent(consumed) == completed
    assert request_approval and parent(parent(request_approval)) == dispatch_approval
    # One trace: every span but the test's own root has its parent in it.
    assert all(s.parent_id in by_id for s in spans if s is not trigger), [
        s for s in spans if s.parent_id not in by_id and s is not trigger
    ]


def log_lines(suite: LocalSuite) -> dict[str, list[dict[str, Any]]]:
    """Every JSON log line of every process, by process name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((suite.data_dir / "logs").glob("*.log")):
        lines = found.setdefault(path.stem, [])
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
    return found


async def test_logs_carry_the_ids_and_the_trace_but_never_a_token(
    api: Client, observed_suite: LocalSuite
) -> None:
    await api.publish(PROCESS)
    trace_id = secrets.token_hex(16)
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=api.key("logged"), process_name="observed"
    )
    request.input.update({"topic": "logs"})
    reply = await api.executions.TriggerProcess(
        request, metadata=traced(api, f"00-{trace_id}-{secrets.token_hex(8)}-01")
    )
    execution_id = reply.execution.id
    approval = await api.pending_approval(execution_id)
    await api.decide(approval.id, approval_pb2.DECISION_APPROVE, APPROVER_TOKEN)
    assert (await api.wait(execution_id)).status == execution_pb2.EXECUTION_STATUS_COMPLETED
    # A refused token is not logged either.
    with pytest.raises(grpc.aio.AioRpcError):
        await api.decide(approval.id, approval_pb2.DECISION_APPROVE, "wrong-" + APPROVER_TOKEN)

    def about(process: str, **fields: str) -> list[dict[str, Any]]:
        return [
            line
            for line in log_lines(observed_suite).get(process, [])
            if all(line.get(k) == v for k, v in fields.items())
        ]

    # Each log line of an RPC, a consumed message, a dispatch or a job names what it is about.
    deadline = time.monotonic() + 30
    while not about("execution", execution_id=execution_id, approval_id=approval.id):
        assert time.monotonic() < deadline, "the ApprovalDecided consumer logged no line"
        await asyncio.sleep(0.1)
    assert about("execution", execution_id=execution_id, trace_id=trace_id)  # TriggerProcess
    assert about("approval", approval_id=approval.id)  # SubmitDecision
    assert about("approval", execution_id=execution_id, step_id="review", trace_id=trace_id)
    assert about("work", execution_id=execution_id, step_id="research", trace_id=trace_id)
    job = about("executor-0", execution_id=execution_id, step_id="research", trace_id=trace_id)
    assert job and all(line.get("work_id") for line in job)
    # No bearer token anywhere in any log (services, executor, NATS): ours and the
    # service, executor and admin tokens the suite made.
    assert APPROVER_TOKEN in parse_auth_tokens(observed_suite.env()["TRINITY_AUTH_TOKENS"])
    for path in (observed_suite.data_dir / "logs").glob("*.log"):
        text = path.read_text(errors="replace")
        for token in parse_auth_tokens(observed_suite.env()["TRINITY_AUTH_TOKENS"]):
            assert token not in text, f"{token} logged in {path.name}"


TIMED = """
name: observed-timed
steps:
  - id: research
    agent_task: {agent: echo, message: "Research {{ input.topic }}"}
  - id: pause
    depends_on: [research]
    timer: {duration: 200ms}
  - id: summarize
    depends_on: [pause]
    agent_task: {agent: echo, message: "Summarize"}
"""


async def test_the_step_after_a_timer_continues_the_trace(
    api: Client, collector: tuple[Collector, int]
) -> None:
    spans_of, _port = collector
    await api.publish(TIMED)
    trace_id = secrets.token_hex(16)
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=api.key("timed"), process_name="observed-timed"
    )
    request.input.update({"topic": "timers"})
    reply = await api.executions.TriggerProcess(
        request, metadata=traced(api, f"00-{trace_id}-{secrets.token_hex(8)}-01")
    )
    done = await api.wait(reply.execution.id)
    assert done.status == execution_pb2.EXECUTION_STATUS_COMPLETED

    deadline = time.monotonic() + 30
    while True:
        spans = spans_of.of_trace(trace_id)
        by_id = {s.span_id: s for s in spans}
        fired = [s for s in spans if s.name == "timer fired"]
        after = [
            s
            for s in spans
            if s.name == "dispatch request_work"
            and s.parent_id in by_id
            and by_id[s.parent_id].name == "timer fired"
        ]
        if fired and after:
            break
        assert time.monotonic() < deadline, f"no dispatch after the timer in {spans}"
        await asyncio.sleep(0.1)
    # The timer was set by the decision on research's WorkCompleted.
    assert by_id[fired[0].parent_id].name == "consume WorkCompleted"
