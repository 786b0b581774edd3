"""A finished result survives the work service being away (issue 19 §1).

The agent finishes while the work service is stopped: the executor keeps the result
and reports it, with the same request id, until the service is back. The agent runs
once; the work completes on its first delivery.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import grpc
import structlog

from trinity.process.work.v1 import work_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.testing.ports import free_port

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
