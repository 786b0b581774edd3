"""An executor killed mid-job, and the proof that executors never publish facts."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import yaml
from nats.js import JetStreamContext
from sqlalchemy import select

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import facts_pb2, work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.db import OUTBOX
from trinity_platform.envelope import Envelope, decode

Facts = Callable[[], Awaitable[list[Envelope]]]
api = work_service_pb2


def task(key: str, agent: str, **kwargs: Any) -> api.RequestWorkRequest:
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            agent_task=work_pb2.AgentTaskPayload(agent=agent, message="go")
        ),
        correlation=types_pb2.StepRef(execution_id="exec-k", step_id="s", iteration=1, attempt=1),
        **kwargs,
    )


def status_is(
    stub: WorkServiceStub, work_id: str, status: int, **fields: Any
) -> Callable[[], Awaitable[Any]]:
    async def check() -> work_pb2.WorkRequest | None:
        work = (await stub.GetWork(api.GetWorkRequest(work_id=work_id))).work
        if work.status == status and all(getattr(work, k) == v for k, v in fields.items()):
            return work
        return None

    return check


def spawn_executor(
    tmp_path: Path, config: dict[str, Any], target: str, nats_url: str
) -> subprocess.Popen[bytes]:
    path = tmp_path / f"{config['executor_id']}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env.update(
        TRINITY_EXECUTOR_CONFIG=str(path),
        TRINITY_WORK_TARGET=target,
        TRINITY_NATS_URL=nats_url,
        TRINITY_DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / f"{config['executor_id']}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "trinity_work.executor"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def test_sigkill_mid_job_is_reoffered_and_completed_once(
    service: Any,
    stub: WorkServiceStub,
    start_executor: Any,
    facts: Facts,
    wait_for: Any,
    nats_url: str,
    tmp_path: Path,
) -> None:
    script = tmp_path / "slow.yaml"
    script.write_text("replies:\n  - output: never\n    delay: 60s\n")
    doomed = spawn_executor(
        tmp_path,
        {
            "executor_id": "doomed",
            "lease": "1s",
            "heartbeat_interval": "250ms",
            "fetch_timeout": "300ms",
            "agents": {"worker": {"backend": "script", "file": str(script)}},
        },
        f"127.0.0.1:{service.runtime.port}",
        nats_url,
    )
    try:
        work = (await stub.RequestWork(task("kill-me", "worker"))).work
        await wait_for(
            status_is(stub, work.id, work_pb2.WORK_STATUS_STARTED, executor_id="doomed"), timeout=45
        )
        await asyncio.sleep(1.2)  # it heartbeats: still its lease, past the first lease duration
        assert (
            await stub.GetWork(api.GetWorkRequest(work_id=work.id))
        ).work.executor_id == "doomed"
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()

    await start_executor(service, {"agents": {"worker": {"backend": "echo"}}})
    done = await wait_for(status_is(stub, work.id, work_pb2.WORK_STATUS_COMPLETED), timeout=15)
    assert done.delivery == 2 and done.executor_id == "executor-1"
    assert done.result.output == "go"

    async def completed_fact() -> bool:
        return any(e.type.endswith(".WorkCompleted") for e in await facts() if e.subject == work.id)

    await wait_for(completed_fact)
    await asyncio.sleep(0.5)  # nothing more may follow
    mine = [e for e in await facts() if e.subject == work.id]
    assert [e.type.rsplit(".", 1)[1] for e in mine] == [
        "WorkRequested",
        "WorkStarted",
        "WorkStarted",
        "WorkCompleted",
    ]
    first, second = decode(mine[1]), decode(mine[2])
    assert isinstance(first, facts_pb2.WorkStarted) and isinstance(second, facts_pb2.WorkStarted)
    assert (first.executor_id, first.delivery) == ("doomed", 1)
    assert (second.executor_id, second.delivery) == ("executor-1", 2)


NATS_USERS = """
authorization {
  users = [
    {user: work, password: work}
    {
      user: executor, password: executor
      permissions: {
        publish: {
          allow: ["$JS.API.CONSUMER.>", "$JS.API.STREAM.INFO.>", "$JS.API.INFO", "$JS.ACK.>", "_INBOX.>"]
          deny: ["trinity.>"]
        }
        subscribe: {allow: ["_INBOX.>"]}
      }
    }
  ]
}
"""


async def test_executors_never_publish_facts(
    secured_nats: Any, start_service: Any, start_executor: Any, wait_for: Any
) -> None:
    """Executors run with NATS credentials that cannot publish on any trinity subject, and
    every message in the facts stream is a row of the work service's outbox: the only
    publisher of the facts stream is the work service's relay."""
    server = secured_nats(NATS_USERS)
    work_url = f"nats://work:work@127.0.0.1:{server.port}"
    executor_url = f"nats://executor:executor@127.0.0.1:{server.port}"
    service = await start_service(nats=work_url)
    await start_executor(
        service,
        {
            "agents": {
                "echo": {"backend": "echo"},
                "broken": {"backend": "http", "url": "http://127.0.0.1:9/"},
            }
        },
        nats=executor_url,
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}") as channel:
        stub = WorkServiceStub(channel)
        ok = (await stub.RequestWork(task("ok", "echo"))).work
        bad = (await stub.RequestWork(task("bad", "broken"))).work
        await wait_for(status_is(stub, ok.id, work_pb2.WORK_STATUS_COMPLETED))
        await wait_for(status_is(stub, bad.id, work_pb2.WORK_STATUS_FAILED))

    # The executor's credentials really cannot publish a fact.
    rogue = await nats.connect(executor_url)
    try:
        with pytest.raises(Exception):  # noqa: B017 - a permissions violation or no ack
            await rogue.jetstream(timeout=1).publish(
                "trinity.process.work.facts.v1.WorkCompleted", b"forged"
            )
    finally:
        await rogue.close()

    reader = await nats.connect(work_url)
    try:
        js: JetStreamContext = reader.jetstream()

        async def six_facts() -> list[Envelope] | None:
            stored = await _read_all(js, "TRINITY_PROCESS_WORK_FACTS")
            return stored if len(stored) >= 6 else None

        stored = await wait_for(six_facts)
    finally:
        await reader.close()
    async with service.runtime.engine.connect() as conn:
        outbox_ids = set((await conn.execute(select(OUTBOX.c.message_id))).scalars())
    assert len(stored) == 6  # requested, started, completed / failed, for each
    assert {e.id for e in stored} <= outbox_ids
    assert {e.source for e in stored} == {"trinity.process/work"}


async def _read_all(js: JetStreamContext, stream: str) -> list[Envelope]:
    info = await js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, seq)
        out.append(Envelope.from_headers(dict(raw.headers or {}), raw.data or b"", raw.subject))
    return out


async def test_sigterm_releases_the_running_job_to_another_executor(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    wait_for: Any,
    nats_url: str,
    tmp_path: Path,
) -> None:
    script = tmp_path / "slow.yaml"
    script.write_text("replies:\n  - output: never\n    delay: 60s\n")
    leaving = spawn_executor(
        tmp_path,
        {
            "executor_id": "leaving",
            "shutdown_grace": "300ms",
            "fetch_timeout": "300ms",
            "agents": {"worker": {"backend": "script", "file": str(script)}},
        },
        f"127.0.0.1:{sqlite_service.runtime.port}",
        nats_url,
    )
    try:
        work = (await sqlite_stub.RequestWork(task("term-me", "worker", max_deliveries=1))).work
        await wait_for(
            status_is(sqlite_stub, work.id, work_pb2.WORK_STATUS_STARTED, executor_id="leaving"),
            timeout=45,
        )
        leaving.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(leaving.wait, 20) == 0
    finally:
        if leaving.poll() is None:
            leaving.kill()
            leaving.wait()
    released = (await sqlite_stub.GetWork(api.GetWorkRequest(work_id=work.id))).work
    assert (released.status, released.delivery) == (work_pb2.WORK_STATUS_REQUESTED, 2)
    await start_executor(sqlite_service, {"agents": {"worker": {"backend": "echo"}}})
    await wait_for(status_is(sqlite_stub, work.id, work_pb2.WORK_STATUS_COMPLETED))
