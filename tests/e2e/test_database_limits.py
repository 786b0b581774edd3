"""A database that refuses connections costs retries, never lost triggers or agent runs
twice (issue 19 §1).

The work and execution services run as PostgreSQL roles limited to 6 connections
(``CONNECTION LIMIT 6``) while their pools may open up to 20, as after a restart
burst against a full server: the server answers "too many connections". The
services answer UNAVAILABLE with RetryInfo (never INTERNAL); the client retries
TriggerProcess with the same request id; the executor keeps each finished result
and reports it until recorded. Every execution completes, every agent step runs
once, and no RPC hit the INTERNAL path.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.envelope import decode
from trinity_platform.grpc_errors import is_permanent, retry_delay
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.postgres import ConnectionLimitedDatabase

from .conftest import POSTGRES_ENV, read_stream
from .test_resilience import publish

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

EXECUTIONS = 30
LIMITED = ("execution", "work")
PROCESS_STEPS = ("one", "two", "three")


@pytest.fixture
def limited_suite(tmp_path: Path) -> Iterator[tuple[LocalSuite, str]]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL end-to-end tests skipped")
    databases = {s: ConnectionLimitedDatabase(admin_url, limit=6) for s in LIMITED}
    urls = {service: database.create() for service, database in databases.items()}
    (tmp_path / "replies.yaml").write_text('replies:\n  - output: "ok"\n    delay: 20ms\n')
    config = tmp_path / "executor.yaml"
    config.write_text(
        "concurrency: 16\nagents:\n  worker:\n    backend: script\n    file: replies.yaml\n"
    )
    nats_server = NatsServer(tmp_path / "nats")
    nats_server.start()
    suite = LocalSuite(
        data_dir=tmp_path / "data",
        nats_url=nats_server.url,
        ports={service: free_port() for service in SERVICES},
        database_urls=urls,  # definition and approval on SQLite
        executor_config=config,
        executors=2,
    )
    try:
        suite.start()
        suite.wait_healthy(120)
        yield suite, nats_server.url
    finally:
        suite.stop()
        nats_server.stop()
        for database in databases.values():
            database.drop()


async def trigger_with_retries(
    stub: ExecutionServiceStub, request_id: str, answers: Counter[str]
) -> str:
    """TriggerProcess, retried with the same request id while the answer is retryable."""
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=request_id, process_name="three-steps"
    )
    while True:
        try:
            reply = await stub.TriggerProcess(request, timeout=30)
        except grpc.aio.AioRpcError as error:
            answers[error.code().name] += 1
            if is_permanent(error.code()) or error.code() == grpc.StatusCode.INTERNAL:
                raise
            await asyncio.sleep(retry_delay(error) or 0.2)
            continue
        answers["OK"] += 1
        return str(reply.execution.id)


async def status_of(stub: ExecutionServiceStub, execution_id: str) -> int:
    while True:
        try:
            reply = await stub.GetExecution(
                execution_service_pb2.GetExecutionRequest(execution_id=execution_id), timeout=30
            )
            return int(reply.execution.status)
        except grpc.aio.AioRpcError as error:
            assert not is_permanent(error.code()), error
            assert error.code() != grpc.StatusCode.INTERNAL, error
            await asyncio.sleep(retry_delay(error) or 0.2)


async def test_exhausted_connections_lose_no_trigger_and_run_no_agent_twice(
    limited_suite: tuple[LocalSuite, str],
) -> None:
    suite, nats_url = limited_suite
    await publish(suite.ports["definition"])
    answers: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}") as channel:
        stub = ExecutionServiceStub(channel)
        ids = await asyncio.gather(
            *(trigger_with_retries(stub, f"limited-{i}", answers) for i in range(EXECUTIONS))
        )
        assert len(set(ids)) == EXECUTIONS  # a retried trigger returned its first execution
        deadline = time.monotonic() + 300  # generous: the machine is shared
        while True:
            seen = Counter(await asyncio.gather(*(status_of(stub, i) for i in ids)))
            if seen[execution_pb2.EXECUTION_STATUS_COMPLETED] == EXECUTIONS:
                break
            assert time.monotonic() < deadline, f"not all completed: {seen}"
            await asyncio.sleep(0.5)
    assert answers["INTERNAL"] == 0, answers

    import nats

    nc = await nats.connect(nats_url)
    try:
        work = await read_stream(nc.jetstream(), "TRINITY_PROCESS_WORK_FACTS")
    finally:
        await nc.close()
    started: Counter[tuple[str, str]] = Counter()
    completed: Counter[tuple[str, str]] = Counter()
    for envelope in work:
        fact = decode(envelope)
        key = (fact.correlation.execution_id, fact.correlation.step_id)  # type: ignore[attr-defined]
        if isinstance(fact, work_facts.WorkStarted):
            started[key] += 1
        elif isinstance(fact, work_facts.WorkCompleted):
            completed[key] += 1
    expected = {(e, s): 1 for e in ids for s in PROCESS_STEPS}
    assert dict(started) == expected  # no agent ran twice (a second start = a second run)
    assert dict(completed) == expected

    logs = {name: (suite.data_dir / "logs" / f"{name}.log").read_text() for name in LIMITED}
    for name, text in logs.items():
        assert "unhandled exception in RPC" not in text, suite.log_tail(name, 80)
    # The fault was real: the services did run out of connections and said so.
    refusals = sum(text.count("DATABASE_UNAVAILABLE") for text in logs.values())
    assert refusals > 0, "the connection limit was never reached; the test proved nothing"
