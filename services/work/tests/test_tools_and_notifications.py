"""Tool runs from the allow-list, and each notification channel against a real local peer."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from trinity.process.common.v1 import enums_pb2, types_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub

api = work_service_pb2
FAILED, COMPLETED = work_pb2.WORK_STATUS_FAILED, work_pb2.WORK_STATUS_COMPLETED


def tool(key: str, action: int, **arguments: str) -> api.RequestWorkRequest:
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            tool_run=work_pb2.ToolRunPayload(action=action, arguments=arguments)
        ),  # type: ignore[arg-type]
    )


def note(
    key: str, channel: int, target: str, subject: str = "Build", message: str = "it is green"
) -> api.RequestWorkRequest:
    return api.RequestWorkRequest(
        request_id=key,
        payload=work_pb2.WorkPayload(
            notification=work_pb2.NotificationPayload(
                channel=channel,  # type: ignore[arg-type]
                target=target,
                subject=subject,
                message=message,
            )
        ),
        correlation=types_pb2.StepRef(
            execution_id="exec-n", step_id="notify", iteration=1, attempt=1
        ),
    )


VERIFY = (
    "import os, sys, json; print(json.dumps({'cwd': os.getcwd(), 'args': sys.argv[1:], "
    "'secret': 'EXECUTOR_SECRET' in os.environ}))"
)


async def test_tool_runs_only_allow_listed_commands(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    finish: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EXECUTOR_SECRET", "nope")
    repo = tmp_path / "repo"
    repo.mkdir()
    await start_executor(
        sqlite_service,
        {
            "tools": {
                "verify": {
                    "command": [sys.executable, "-c", VERIFY, "--path={path}", "{level}"],
                    "arguments": {
                        "path": {"pattern": "^[A-Za-z0-9_./-]+$"},
                        "level": {"pattern": "^(quick|full)$", "default": "quick"},
                    },
                    "cwd": str(repo),
                },
                "publish": {
                    "command": [sys.executable, "-c", "import sys; sys.exit('no release today')"]
                },
                "generate": {
                    "command": [sys.executable, "-c", "import time; time.sleep(30)"],
                    "timeout": "300ms",
                },
            }
        },
    )
    verify = enums_pb2.ACTION_KIND_VERIFY
    done = await finish(sqlite_stub, tool("t1", verify, path="src/app"))
    assert done.status == COMPLETED, done.error
    report = json.loads(done.result.output)
    assert report == {"cwd": str(repo), "args": ["--path=src/app", "quick"], "secret": False}
    assert dict(done.result.structured_output)["args"] == ["--path=src/app", "quick"]
    assert [e.name for e in done.result.evidence] == ["stdout"]

    for key, request, code in [
        ("t2", tool("t2", verify, path="x; rm -rf /"), "ARGUMENT_NOT_ALLOWED"),
        ("t3", tool("t3", verify, path="src", shell="sh"), "ARGUMENT_NOT_ALLOWED"),
        ("t4", tool("t4", verify), "ARGUMENT_NOT_ALLOWED"),
        ("t5", tool("t5", enums_pb2.ACTION_KIND_SCAFFOLD), "TOOL_NOT_CONFIGURED"),
        ("t6", tool("t6", enums_pb2.ACTION_KIND_PUBLISH), "TOOL_FAILED"),
        ("t7", tool("t7", enums_pb2.ACTION_KIND_GENERATE), "TIMEOUT"),
    ]:
        failed = await finish(sqlite_stub, request)
        assert (failed.status, failed.error.code) == (FAILED, code), key
    published = await finish(sqlite_stub, tool("t6", enums_pb2.ACTION_KIND_PUBLISH))
    assert "no release today" in published.error.message


@pytest.fixture
async def http_peer() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A local HTTP server recording every POST (a webhook receiver, a Slack stand-in)."""
    received: list[tuple[dict[str, str], bytes]] = []

    async def record(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        if request.path == "/refuse":
            return web.Response(status=500)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, _Inbox]]:
    inbox = _Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield port, inbox
    controller.stop()


async def test_notification_channels(
    sqlite_service: Any,
    sqlite_stub: WorkServiceStub,
    start_executor: Any,
    finish: Any,
    http_peer: tuple[str, list[tuple[dict[str, str], bytes]]],
    smtp_server: tuple[int, _Inbox],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = http_peer
    smtp_port, inbox = smtp_server
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    monkeypatch.setenv("SLACK_URL", f"{url}/slack/T000/B000")
    outbox = tmp_path / "notes"
    await start_executor(
        sqlite_service,
        {
            "notifications": {
                "webhook": {
                    "secret": "${HOOK_SECRET}",
                    "targets": {"ops": f"{url}/hooks/ops", "broken": f"{url}/refuse"},
                    "allow_url_prefixes": [f"{url}/hooks/"],
                },
                "email": {
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "sender": "Trinity <trinity@example.com>",
                },
                "slack": {"targets": {"alerts": "${SLACK_URL}"}, "default": "alerts"},
                "file": {"directory": str(outbox)},
            }
        },
    )
    webhook, email, slack, file = (
        enums_pb2.CHANNEL_WEBHOOK,
        enums_pb2.CHANNEL_EMAIL,
        enums_pb2.CHANNEL_SLACK,
        enums_pb2.CHANNEL_FILE,
    )

    hooked = await finish(sqlite_stub, note("n1", webhook, "ops"))
    assert hooked.status == COMPLETED, hooked.error
    headers, body = received[0]
    expected = hmac.new(
        b"s3cret", headers["X-Trinity-Timestamp"].encode() + b"." + body, hashlib.sha256
    )
    assert headers["X-Trinity-Signature"] == "sha256=" + expected.hexdigest()
    sent = json.loads(body)
    assert (sent["subject"], sent["message"], sent["work_id"]) == (
        "Build",
        "it is green",
        hooked.id,
    )
    assert sent["correlation"]["execution_id"] == "exec-n"
    by_url = await finish(sqlite_stub, note("n2", webhook, f"{url}/hooks/dev"))
    assert by_url.status == COMPLETED and len(received) == 2

    mailed = await finish(
        sqlite_stub, note("n3", email, "ann@example.com, bob@example.com", "Approve?")
    )
    assert mailed.status == COMPLETED, mailed.error
    [(sender, recipients, content)] = inbox.messages
    assert sender == "trinity@example.com" and recipients == ["ann@example.com", "bob@example.com"]
    mail = message_from_bytes(content)
    assert mail["Subject"] == "Approve?" and mail["X-Trinity-Work-Id"] == mailed.id
    assert mail.get_payload(decode=True).decode().strip() == "it is green"  # type: ignore[union-attr]

    slacked = await finish(sqlite_stub, note("n4", slack, ""))
    assert slacked.status == COMPLETED, slacked.error
    assert json.loads(received[-1][1]) == {"text": "*Build*\nit is green"}

    filed = await finish(sqlite_stub, note("n5", file, "ops/alerts.jsonl"))
    assert filed.status == COMPLETED, filed.error
    lines = (await asyncio.to_thread((outbox / "ops" / "alerts.jsonl").read_text)).splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["it is green"]

    for key, request, code in [
        ("n6", note("n6", webhook, "https://evil.example.com/x"), "TARGET_NOT_ALLOWED"),
        ("n7", note("n7", webhook, "broken"), "DELIVERY_FAILED"),
        ("n8", note("n8", file, "../escape.jsonl"), "TARGET_NOT_ALLOWED"),
        ("n9", note("n9", file, str(tmp_path / "abs.jsonl")), "TARGET_NOT_ALLOWED"),
        ("n10", note("n10", email, "not-an-address"), "TARGET_NOT_ALLOWED"),
        ("n11", note("n11", slack, "random"), "TARGET_NOT_ALLOWED"),
    ]:
        failed = await finish(sqlite_stub, request)
        assert (failed.status, failed.error.code) == (FAILED, code), key
    assert not (tmp_path / "escape.jsonl").exists() and not (tmp_path / "abs.jsonl").exists()

    monkeypatch.delenv("HOOK_SECRET")
    unsigned = await finish(sqlite_stub, note("n12", webhook, "ops"))
    assert (unsigned.error.code, unsigned.error.details["variable"]) == (
        "CREDENTIALS_MISSING",
        "HOOK_SECRET",
    )
    assert len(received) == 4  # two webhooks, one refused webhook, one slack


DEEP_JSON = "import json; v = 1\nfor _ in range(30): v = {'a': v}\nprint(json.dumps(v))"


async def test_a_result_the_work_service_refuses_fails_the_work_clearly(
    sqlite_service: Any, sqlite_stub: WorkServiceStub, start_executor: Any, finish: Any
) -> None:
    """Text with NUL or JSON nested past the Struct limit is refused at the work service's
    edge; the executor reports that as a failure instead of leaving the work to be
    redelivered and refused again."""
    await start_executor(
        sqlite_service,
        {
            "tools": {
                "scaffold": {"command": [sys.executable, "-c", "print('a\\x00b')"]},
                "generate": {"command": [sys.executable, "-c", DEEP_JSON]},
            }
        },
    )
    for key, action, problem in [
        ("r1", enums_pb2.ACTION_KIND_SCAFFOLD, "NUL"),
        ("r2", enums_pb2.ACTION_KIND_GENERATE, "nests deeper than 24 levels"),
    ]:
        failed = await finish(sqlite_stub, tool(key, action))
        assert (failed.status, failed.error.code) == (FAILED, "EXECUTOR_ERROR"), key
        assert "refused the result" in failed.error.message and problem in failed.error.message
