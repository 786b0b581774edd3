"""Admission is bounded (issue 13 §7, ARCHITECTURE.md invariant 12).

With ``TRINITY_EXECUTION_MAX_IN_PROGRESS=3``, three executions that wait on a long
timer fill the bound: the next TriggerProcess is refused RESOURCE_EXHAUSTED with
``ADMISSION_LIMIT`` and a RetryInfo, a retry of an admitted trigger is still
answered, and once one execution ends the refused trigger, retried with its
request id, is admitted and runs to completion.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.grpc_errors import error_details, retry_delay
from trinity_platform.testing.ports import free_port

from .conftest import Client

pytestmark = pytest.mark.e2e

BOUND = 3
WAITING = """
name: waits
steps:
  - id: wait
    timer: {duration: 1h}
  - id: after
    depends_on: [wait]
    agent_task: {agent: echo, message: "done"}
"""
QUICK = """
name: quick
steps:
  - id: only
    agent_task: {agent: echo, message: "done"}
"""


@pytest.fixture
async def api(tmp_path: Path, nats_url: str) -> AsyncIterator[Client]:
    suite = LocalSuite(
        data_dir=tmp_path / "data",
        nats_url=nats_url,
        ports={service: free_port() for service in SERVICES},
        extra_env={"TRINITY_EXECUTION_MAX_IN_PROGRESS": str(BOUND)},
    )
    client = Client(suite)
    try:
        suite.start()
        await asyncio.to_thread(suite.wait_healthy, 90)
        yield client
    finally:
        await client.close()
        suite.stop()


def trigger_request(request_id: str, name: str) -> execution_service_pb2.TriggerProcessRequest:
    return execution_service_pb2.TriggerProcessRequest(request_id=request_id, process_name=name)


async def test_triggers_beyond_the_bound_are_refused_with_retry_info_and_admitted_later(
    api: Client,
) -> None:
    await api.publish(WAITING)
    await api.publish(QUICK)
    admitted = [
        (await api.executions.TriggerProcess(trigger_request(f"wait-{i}", "waits"))).execution.id
        for i in range(BOUND)
    ]

    refused_request = trigger_request("over-the-bound", "quick")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.executions.TriggerProcess(refused_request)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(refused.value)[0] == "ADMISSION_LIMIT"
    delay = retry_delay(refused.value)
    assert delay is not None and delay > 0

    # A retry of an admitted trigger is answered from its key, bound or not.
    again = await api.executions.TriggerProcess(trigger_request("wait-0", "waits"))
    assert again.execution.id == admitted[0]

    await api.executions.CancelExecution(
        execution_service_pb2.CancelExecutionRequest(
            request_id="make-room", execution_id=admitted[0], reason="room for another"
        )
    )
    deadline = time.monotonic() + 60
    while True:  # the client's retry loop: same request id, RetryInfo's delay
        try:
            reply = await api.executions.TriggerProcess(refused_request)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert time.monotonic() < deadline, "never admitted after an execution ended"
            await asyncio.sleep(retry_delay(error) or 0.5)
    finished = await api.wait(reply.execution.id)
    assert finished.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    for execution_id in admitted[1:]:  # the others are still waiting, untouched
        assert (await api.get(execution_id)).status == execution_pb2.EXECUTION_STATUS_RUNNING
