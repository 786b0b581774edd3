"""A finished result survives the work service being away (issue 19 §1).

The agent finishes while the work service is stopped: the executor keeps the result
and reports it, with the same request id, until the service is back. The agent runs
once; the work completes on its first delivery. Against a scripted server: INTERNAL
(older servers) and UNAVAILABLE are retried with the one request id, with no time
limit; a lost lease (FAILED_PRECONDITION) ends the report at once.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
import structlog

from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import (
    WorkServiceServicer,
    WorkServiceStub,
    add_WorkServiceServicer_to_server,
)
from trinity_platform import errors
from trinity_platform.grpc_errors import internal_status, to_grpc_status
from trinity_platform.testing.ports import free_port
from trinity_work.domain.model import WorkResult
from trinity_work.executor.client import WorkClient

from .test_reliability import status_is, task

# Notes each run in a file, then waits until the test lets it finish.
AGENT = """
import pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
with open(folder / "runs", "a") as runs:
    runs.write("ran\\n")
while not (folder / "release").exists():
    time.sleep(0.02)
print("finished while the work service was away")
"""


async def test_a_result_finished_during_an_outage_is_reported_once_the_service_is_back(
    start_service: Any, start_executor: Any, facts: Any, wait_for: Any, tmp_path: Path
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    database = f"sqlite+aiosqlite:///{tmp_path}/work.db"
    service = await start_service(database, listen=listen)
    (tmp_path / "agent.py").write_text(AGENT)
    config = {
        "lease": "60s",  # the outage must not cost the lease
        "heartbeat_interval": "200ms",
        "agents": {
            "worker": {
                "backend": "command",
                "command": [sys.executable, str(tmp_path / "agent.py"), str(tmp_path)],
            }
        },
    }
    await start_executor(service, config)
    async with grpc.aio.insecure_channel(listen) as channel:
        stub = WorkServiceStub(channel)
        work = (await stub.RequestWork(task("outage", "worker"))).work
        await wait_for(status_is(stub, work.id, work_pb2.WORK_STATUS_STARTED), timeout=30)
        await wait_for(lambda: _async((tmp_path / "runs").exists()), timeout=30)

        await service.runtime.stop()  # the work service goes away mid-job
        with structlog.testing.capture_logs() as logs:
            (tmp_path / "release").touch()  # the agent finishes now

            def report_refused() -> bool:
                return any(
                    e.get("call") == "RecordWorkCompleted" and e.get("code") == "UNAVAILABLE"
                    for e in logs
                )

            await wait_for(lambda: _async(report_refused()), timeout=30)
        await start_service(database, listen=listen)  # back, same address and database
        done = await wait_for(status_is(stub, work.id, work_pb2.WORK_STATUS_COMPLETED), timeout=60)
    assert done.delivery == 1  # never offered again
    assert done.result.output.strip() == "finished while the work service was away"
    assert (tmp_path / "runs").read_text() == "ran\n"  # the agent ran once
    mine = [e.type.rsplit(".", 1)[1] for e in await facts() if e.subject == work.id]
    assert mine == ["WorkRequested", "WorkStarted", "WorkCompleted"]


async def _async(value: Any) -> Any:
    return value


class ScriptedWorkService(WorkServiceServicer):
    """Answers RecordWorkCompleted from a script of status codes (None: success)."""

    def __init__(self, answers: list[grpc.StatusCode | None]) -> None:
        self.answers = answers
        self.request_ids: list[str] = []

    async def RecordWorkCompleted(self, request: Any, context: Any) -> Any:
        self.request_ids.append(request.request_id)
        code = self.answers.pop(0)
        if code is not None:
            retry = 0.01 if code == grpc.StatusCode.UNAVAILABLE else None
            error = to_trinity_error_status(code, retry)
            await context.abort(error.code, error.details, error.trailing_metadata)
        return work_service_pb2.RecordWorkCompletedResponse(
            work=work_pb2.WorkRequest(id=request.work_id, status=work_pb2.WORK_STATUS_COMPLETED)
        )


def to_trinity_error_status(code: grpc.StatusCode, retry_after: float | None) -> grpc.Status:
    family = {
        grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
        grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    }.get(code)
    if family is None:  # INTERNAL, as a server before the transient mapping answered
        return internal_status("older-server")
    return to_grpc_status(family("scripted", reason="SCRIPTED", retry_after=retry_after))


async def report_against(answers: list[grpc.StatusCode | None]) -> tuple[Any, list[str]]:
    servicer = ScriptedWorkService(list(answers))
    server = grpc.aio.server()
    add_WorkServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = WorkClient(channel, "executor-x", retry_for=0.0)  # no time-based give-up
            try:
                outcome: Any = await client.completed("w-1", 1, WorkResult(output="done"))
            except errors.TrinityError as error:
                outcome = error
    finally:
        await server.stop(0)
    return outcome, servicer.request_ids


async def test_the_result_is_reported_through_internal_and_unavailable_with_one_request_id() -> (
    None
):
    code = grpc.StatusCode
    outcome, request_ids = await report_against(
        [code.INTERNAL, code.UNAVAILABLE, code.INTERNAL, None]
    )
    assert outcome.status == work_pb2.WORK_STATUS_COMPLETED
    assert len(request_ids) == 4 and len(set(request_ids)) == 1  # the same request id


async def test_a_lost_lease_ends_the_report_at_once() -> None:
    outcome, request_ids = await report_against([grpc.StatusCode.FAILED_PRECONDITION, None])
    assert isinstance(outcome, errors.FailedPrecondition)
    assert len(request_ids) == 1
