"""Agent backends against real local peers: an HTTP server, an MCP server, a command."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_platform.envelope import Envelope

api = work_service_pb2
HERE = Path(__file__).parent


def task(
    key: str, agent: str, message: str = "go", max_cost: types_pb2.Money | None = None
) -> api.RequestWorkRequest:
    payload = work_pb2.AgentTaskPayload(agent=agent, message=message)
    if max_cost is not None:
        payload.max_cost.CopyFrom(max_cost)
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(agent_task=payload),
        correlation=types_pb2.StepRef(execution_id="exec-a", step_id=key, iteration=1, attempt=1),
    )


def amount(money: types_pb2.Money) -> tuple[str, int, int]:
    return money.currency_code, money.units, money.nanos


@pytest.fixture
async def agent_server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local agent endpoint: /agent answers JSON, /text plain text, /down HTTP 503."""
    seen: list[dict[str, Any]] = []

    async def agent(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"body": body, "authorization": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != "Bearer agent-token":
            return web.json_response({"error": "who are you"}, status=401)
        if "expensive" in body["message"]:
            return web.json_response(
                {"output": "pricey", "cost": {"amount": "5.00", "currency": "USD"}}
            )
        return web.json_response(
            {
                "output": f"researched: {body['message']}",
                "cost": {"amount": "0.42", "currency": "USD"},
                "context_used": 1234,
                "evidence": [
                    {"kind": "link", "name": "source", "uri": "https://example.org/paper"}
                ],
            }
        )

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain answer")

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=503, text="overloaded")

    app = web.Application()
    app.router.add_post("/agent", agent)
    app.router.add_post("/text", text)
    app.router.add_post("/down", down)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_http_agent(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    finish: Any,
    agent_server: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = agent_server
    monkeypatch.setenv("RESEARCH_TOKEN", "agent-token")
    monkeypatch.delenv("UNSET_TOKEN", raising=False)
    headers = {"Authorization": "Bearer ${RESEARCH_TOKEN}"}
    await start_executor(
        sqlite_service,
        {
            "agents": {
                "researcher": {"backend": "http", "url": f"{url}/agent", "headers": headers},
                "texter": {"backend": "http", "url": f"{url}/text"},
                "overloaded": {"backend": "http", "url": f"{url}/down"},
                "gone": {"backend": "http", "url": "http://127.0.0.1:9/agent", "timeout": "2s"},
                "keyless": {
                    "backend": "http",
                    "url": f"{url}/agent",
                    "headers": {"Authorization": "Bearer ${UNSET_TOKEN}"},
                },
            }
        },
    )
    done = await finish(sqlite_stub, task("h1", "researcher", "quantum dots"))
    assert done.status == work_pb2.WORK_STATUS_COMPLETED, done.error
    assert done.result.output == "researched: quantum dots"
    assert amount(done.result.cost) == ("USD", 0, 420_000_000)
    assert done.result.context_used == 1234
    assert [(e.kind, e.uri) for e in done.result.evidence] == [
        (work_pb2.EVIDENCE_KIND_LINK, "https://example.org/paper")
    ]
    assert seen[0]["body"]["correlation"]["step_id"] == "h1"
    assert seen[0]["body"]["work_id"] == done.id

    plain = await finish(sqlite_stub, task("h2", "texter"))
    assert plain.result.output == "plain answer"

    over = await finish(
        sqlite_stub,
        task("h3", "researcher", "expensive", types_pb2.Money(currency_code="USD", units=1)),
    )
    assert over.status == work_pb2.WORK_STATUS_FAILED and over.error.code == "BUDGET_EXCEEDED"
    # What the agent spent travels with the failure, so the execution still counts it.
    assert over.error.details["cost_currency"] == "USD"
    assert over.error.details["cost"] and "max_cost" in over.error.details

    for key, agent, code in [
        ("h4", "overloaded", "AGENT_UNAVAILABLE"),
        ("h5", "gone", "AGENT_UNAVAILABLE"),
        ("h6", "keyless", "CREDENTIALS_MISSING"),
        ("h7", "nobody", "AGENT_UNAVAILABLE"),
    ]:
        failed = await finish(sqlite_stub, task(key, agent))
        assert (failed.status, failed.error.code) == (work_pb2.WORK_STATUS_FAILED, code), key
    keyless = await sqlite_stub.ListWork(api.ListWorkRequest(status=work_pb2.WORK_STATUS_FAILED))
    assert any("UNSET_TOKEN" in w.error.message for w in keyless.work)
    assert len(seen) == 2  # the keyless agent was never called


async def test_mcp_agent(
    sqlite_service: Any, sqlite_stub: WorkServiceStub, start_executor: Any, finish: Any
) -> None:
    server = [sys.executable, str(HERE / "mcp_agent_server.py")]
    await start_executor(
        sqlite_service,
        {
            "agents": {
                "analyst": {
                    "backend": "mcp",
                    "command": server,
                    "tool": "ask",
                    "arguments": {"message": "{message}", "agent": "{agent}"},
                    "timeout": "60s",
                },
            }
        },
    )
    done = await finish(sqlite_stub, task("m1", "analyst", "the market"), timeout=60)
    assert done.status == work_pb2.WORK_STATUS_COMPLETED, done.error
    assert done.result.output == "mcp analyst says: the market"
    assert amount(done.result.cost) == ("USD", 0, 100_000_000)
    assert done.result.context_used == 42

    broken = await finish(sqlite_stub, task("m2", "analyst", "explode now"))
    assert (broken.status, broken.error.code) == (work_pb2.WORK_STATUS_FAILED, "AGENT_ERROR")

    loud = await finish(sqlite_stub, task("m3", "analyst", "plain:quiet please"))
    assert loud.result.output == "QUIET PLEASE"  # text content, one session for all calls


AGENT_SCRIPT = """
import json, os, sys
home = os.environ["CODEX_HOME"]
with open(os.path.join(home, "auth.json")) as f:
    json.load(f)  # it reads its credential, as codex does, and never prints it
leaked = "EXECUTOR_SECRET" in os.environ
print(json.dumps({"output": f"did: {sys.argv[1]} (leaked={leaked})", "cost": "0.05", "context_used": 7}))
"""


async def test_command_agent_and_missing_credentials(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    finish: Any,
    facts: Any,
    wait_for: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "auth.json").write_text(json.dumps({"token": "sk-VERY-SECRET"}))
    monkeypatch.setenv("CODEX_HOME", str(home))
    monkeypatch.setenv("EXECUTOR_SECRET", "do-not-pass")
    monkeypatch.setenv("EMPTY_HOME", str(tmp_path / "nowhere"))
    marker = tmp_path / "ran"
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    await start_executor(
        sqlite_service,
        {
            "agents": {
                "coder": {
                    "backend": "command",
                    "command": [sys.executable, str(script), "{message}"],
                    "env": {"CODEX_HOME": "${CODEX_HOME}"},
                    "credential_files": ["${CODEX_HOME}/auth.json"],
                    "output": "json",
                },
                "unauthorized": {
                    "backend": "command",
                    "command": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
                    "env": {"CODEX_HOME": "${EMPTY_HOME}"},
                    "credential_files": ["${EMPTY_HOME}/auth.json"],
                },
                "failing": {
                    "backend": "command",
                    "command": [sys.executable, "-c", "raise SystemExit(3)"],
                },
            }
        },
    )
    done = await finish(sqlite_stub, task("c1", "coder", "fix the bug"))
    assert done.status == work_pb2.WORK_STATUS_COMPLETED, done.error
    assert done.result.output == "did: fix the bug (leaked=False)"
    assert amount(done.result.cost) == ("USD", 0, 50_000_000)
    assert done.result.context_used == 7

    started = time.monotonic()
    denied = await finish(sqlite_stub, task("c2", "unauthorized"))
    elapsed = time.monotonic() - started
    assert (denied.status, denied.error.code) == (
        work_pb2.WORK_STATUS_FAILED,
        "CREDENTIALS_MISSING",
    )
    assert elapsed < 1.0, elapsed
    assert f"{tmp_path / 'nowhere'}/auth.json does not exist" in denied.error.message
    assert not marker.exists()

    failing = await finish(sqlite_stub, task("c3", "failing"))
    assert (failing.error.code, failing.error.details["exit_code"]) == ("AGENT_ERROR", "3")

    # No retry storm: one delivery, one start, one failure; and no secret anywhere.
    async def settled() -> list[Envelope] | None:
        mine = [e for e in await facts() if e.subject == denied.id]
        return mine if len(mine) == 3 else None

    await wait_for(settled)
    await asyncio.sleep(1.0)
    assert [e.type.rsplit(".", 1)[1] for e in await _of(facts, denied.id)] == [
        "WorkRequested",
        "WorkStarted",
        "WorkFailed",
    ]
    assert (await sqlite_stub.GetWork(api.GetWorkRequest(work_id=denied.id))).work.delivery == 1
    everything = b"".join(e.data for e in await facts()) + done.SerializeToString()
    assert b"sk-VERY-SECRET" not in everything


async def _of(facts: Any, work_id: str) -> list[Envelope]:
    return [e for e in await facts() if e.subject == work_id]


async def test_script_agent_drives_outcomes(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    finish: Any,
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(
        """
replies:
  - match: flaky
    times: 1
    fail: {code: AGENT_UNAVAILABLE, message: "try again"}
  - regex: "^route (\\\\w+)"
    output: '{"route": "fast"}'
    cost: {amount: "1.25", currency: EUR}
    context_used: 9
  - output: "echo: {message}"
"""
    )
    await start_executor(
        sqlite_service, {"agents": {"scripted": {"backend": "script", "file": str(script)}}}
    )
    first = await finish(sqlite_stub, task("s1", "scripted", "flaky job"))
    assert (first.status, first.error.code, first.error.message) == (
        work_pb2.WORK_STATUS_FAILED,
        "AGENT_UNAVAILABLE",
        "try again",
    )
    second = await finish(sqlite_stub, task("s2", "scripted", "flaky job"))
    assert second.result.output == "echo: flaky job"
    routed = await finish(sqlite_stub, task("s3", "scripted", "route me"))
    assert dict(routed.result.structured_output) == {"route": "fast"}
    assert amount(routed.result.cost) == ("EUR", 1, 250_000_000)
    assert routed.result.context_used == 9


async def test_a_large_output_is_stored_as_evidence(
    sqlite_service: Any, sqlite_stub: WorkServiceStub, start_executor: Any, finish: Any
) -> None:
    await start_executor(
        sqlite_service, {"result_inline_limit": 1000, "agents": {"echo": {"backend": "echo"}}}
    )
    big = "x" * 5000
    done = await finish(sqlite_stub, task("big", "echo", big))
    assert done.status == work_pb2.WORK_STATUS_COMPLETED
    assert len(done.result.output) < 1200 and "5000 bytes" in done.result.output
    [reference] = [e for e in done.result.evidence if e.kind == work_pb2.EVIDENCE_KIND_OUTPUT]
    assert reference.uri.startswith("file://")
    stored = Path(reference.uri.removeprefix("file://"))
    assert await asyncio.to_thread(stored.read_text) == big
    small = await finish(sqlite_stub, task("small", "echo", "short"))
    assert small.result.output == "short" and list(small.result.evidence) == []
