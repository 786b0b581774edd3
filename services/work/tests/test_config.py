"""Executor configuration: the documented example, the defaults and the errors."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.authz import Identity
from trinity_platform.channels import open_channel
from trinity_work.domain.model import ActionKind, WorkKind
from trinity_work.executor.agents.gateway import AgentGateway
from trinity_work.executor.config import (
    ConfigError,
    MissingVariable,
    expand,
    load_config,
    parse_config,
    parse_duration,
)
from trinity_work.executor.jobs import JobFailed
from trinity_work.executor.tools import build_argv

WORK = Path(__file__).parent.parent


async def test_the_documented_example_loads() -> None:
    config = load_config(WORK / "executor.example.yaml", env={})
    assert config.executor_id == "executor-1"
    assert config.kinds == (WorkKind.AGENT_TASK, WorkKind.TOOL_RUN, WorkKind.NOTIFICATION)
    assert (config.lease, config.heartbeat_interval, config.max_timeout) == (30.0, 10.0, 3600.0)
    assert {a.backend for a in config.agents.values()} == {
        "echo",
        "script",
        "http",
        "mcp",
        "command",
    }
    assert config.agent("somebody-else") is config.agents["*"]
    assert set(config.tools) == {ActionKind.VERIFY, ActionKind.GENERATE}
    assert set(config.notifications) == {"webhook", "email", "slack", "file"}
    assert config.evidence_dir == WORK / "../../.data/evidence"
    gateway = AgentGateway(config)  # every backend builds from it
    await gateway.close()


def test_defaults_without_a_file() -> None:
    config = load_config(
        None, env={"TRINITY_DATA_DIR": "/var/trinity", "TRINITY_EXECUTOR_ID": "ex-9"}
    )
    assert config.executor_id == "ex-9"
    assert config.agent("anyone") is not None and config.agent("anyone").backend == "echo"  # type: ignore[union-attr]
    assert config.notifications == {"file": {"directory": "/var/trinity/notifications"}}
    assert config.evidence_dir == Path("/var/trinity/evidence")
    assert config.tools == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"surprise": 1}, "unknown setting"),
        ({"lease": "soon"}, "lease: not a duration"),
        ({"lease": "1s", "heartbeat_interval": "2s"}, "shorter than the lease"),
        ({"concurrency": 0}, "concurrency"),
        ({"kinds": ["agent_task", "chores"]}, "kinds"),
        ({"agents": {"x": {"backend": "magic"}}}, "agents.x.backend"),
        ({"tools": {"deploy": {"command": ["x"]}}}, "unknown action kind"),
        ({"tools": {"verify": {"command": "make test"}}}, "argv, no shell"),
        (
            {"tools": {"verify": {"command": ["pytest", "{path}"]}}},
            "{path} is not a declared argument",
        ),
        ({"notifications": {"pager": {}}}, "unknown channel"),
    ],
)
def test_invalid_configuration_says_where(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, env={})


def test_bad_backend_options_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agents\.web: the http backend needs 'url'"):
        AgentGateway(parse_config({"agents": {"web": {"backend": "http"}}}, env={}))
    with pytest.raises(ConfigError, match="exactly one of 'command'"):
        AgentGateway(parse_config({"agents": {"m": {"backend": "mcp", "tool": "t"}}}, env={}))


def test_durations_and_variables() -> None:
    assert [parse_duration(v, "x") for v in (2, 1.5, "500ms", "30s", "5m", "1h")] == [
        2.0,
        1.5,
        0.5,
        30.0,
        300.0,
        3600.0,
    ]
    assert expand("Bearer ${TOKEN}", {"TOKEN": "t0k"}) == "Bearer t0k"
    with pytest.raises(MissingVariable) as info:
        expand("${CODEX_HOME}/auth.json", {})
    assert info.value.name == "CODEX_HOME"


def test_tool_arguments_are_checked_and_stay_inside_one_argv_element() -> None:
    config = parse_config(
        {
            "tools": {
                "verify": {
                    "command": ["pytest", "-k", "{expr}", "--root={root}"],
                    "arguments": {"expr": {"pattern": "^[a-z_ ]+$"}, "root": {"default": "."}},
                }
            }
        },
        env={},
    )
    tool = config.tools[ActionKind.VERIFY]
    assert build_argv(tool, {"expr": "not slow and fast"}) == [
        "pytest",
        "-k",
        "not slow and fast",
        "--root=.",
    ]
    for arguments in ({"expr": "x; rm -rf /"}, {"expr": "ok", "extra": "1"}, {}):
        with pytest.raises(JobFailed) as info:
            build_argv(tool, arguments)
        assert info.value.code == "ARGUMENT_NOT_ALLOWED"


async def test_executor_sends_its_bearer_token(
    start_service: Any, start_executor: Any, wait_for: Any
) -> None:
    service = await start_service(
        auth_tokens={
            "exec-token": Identity("executor:trusted", frozenset({"executor"})),
            "svc-token": Identity("service:execution", frozenset({"service", "viewer"})),
        }
    )
    agents = {"agents": {"echo": {"backend": "echo"}}}
    # an unknown token, and the executor's real token under another executor's id
    impostor = await start_executor(service, {**agents, "executor_id": "impostor"}, token="wrong")
    borrower = await start_executor(
        service, {**agents, "executor_id": "executor:someone-else"}, token="exec-token"
    )
    async with open_channel(f"127.0.0.1:{service.runtime.port}", token="svc-token") as channel:
        stub = WorkServiceStub(channel)
        request = work_service_pb2.RequestWorkRequest(
            request_id="tok",
            payload=work_pb2.WorkPayload(
                agent_task=work_pb2.AgentTaskPayload(agent="echo", message="m")
            ),
        )
        work_id = (await stub.RequestWork(request)).work.id
        await asyncio.sleep(1.0)
        get = work_service_pb2.GetWorkRequest(work_id=work_id)
        assert (await stub.GetWork(get)).work.status == work_pb2.WORK_STATUS_REQUESTED
        await impostor.stop()
        await borrower.stop()

        await start_executor(
            service, {**agents, "executor_id": "executor:trusted"}, token="exec-token"
        )

        async def completed() -> bool:
            return (await stub.GetWork(get)).work.status == work_pb2.WORK_STATUS_COMPLETED

        await wait_for(completed)
        assert (await stub.GetWork(get)).work.executor_id == "executor:trusted"
