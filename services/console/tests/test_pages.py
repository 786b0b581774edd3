"""What the pages show: hostile text escaped, the services' refusals as they are,
the person's token on every call, the live timeline's events, the process graph."""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google.protobuf.any_pb2 import Any as AnyMessage

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as approval_api
from trinity.process.common.v1 import types_pb2
from trinity.process.definition.v1 import definition_pb2
from trinity.process.definition.v1 import definition_service_pb2 as definition_api
from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity.process.execution.v1 import facts_pb2
from trinity_console import live
from trinity_console.backend import ServiceError
from trinity_console.views import process_graph
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import spec_to_proto

from .conftest import FakeBackend, sign_in

Client = TestClient[Any, Any]
HOSTILE = "</script><script>alert('pwned')</script><img src=x onerror=alert(1)>"

PROCESS = """
name: review
steps:
  - id: draft
    agent_task: {agent: writer, message: "write"}
  - id: check
    depends_on: [draft]
    human_approval: {approvers: [reviewer@example.com], on_reject: continue}
  - id: route
    depends_on: [check]
    gateway:
      type: exclusive
      routes:
        - {target: draft, condition: "{{ steps.check.decision == 'needs_changes' }}", max_iterations: 3}
        - {target: publish, is_default: true}
  - id: publish
    notification: {channel: file, target: out.jsonl, message: done}
"""


def spec() -> definition_pb2.ProcessSpec:
    return spec_to_proto(parse_process(PROCESS))


def execution(status: int = pb.EXECUTION_STATUS_RUNNING) -> pb.Execution:
    return pb.Execution(
        id="e1",
        process_id="d1",
        process_name="review",
        process_version="1.0",
        status=status,  # type: ignore[arg-type]
        total_cost=types_pb2.Money(currency_code="USD", units=0, nanos=900_000_000),
        budget=types_pb2.Money(currency_code="USD", units=1),
        progress=pb.Progress(finished=1, total=4),
        steps=[
            pb.StepExecution(
                step_id="draft",
                kind=pb.STEP_KIND_AGENT_TASK,
                status=pb.STEP_STATUS_FAILED,
                iteration=2,
                attempt=1,
                output=HOSTILE,
                error=types_pb2.Failure(code="AGENT_FAILED", message=HOSTILE),
                iterations=[
                    pb.StepIteration(iteration=1, status=pb.STEP_STATUS_COMPLETED, output=HOSTILE)
                ],
                iterations_omitted=2,
            ),
            pb.StepExecution(step_id="check", status=pb.STEP_STATUS_PENDING),
        ],
    )


def serve_execution(backend: FakeBackend, status: int = pb.EXECUTION_STATUS_RUNNING) -> None:
    backend.replies["GetExecution"] = api.GetExecutionResponse(execution=execution(status))
    backend.replies["GetDefinition"] = definition_api.GetDefinitionResponse(
        definition=definition_pb2.ProcessDefinition(
            id="d1", name="review", version="1.0", spec=spec()
        )
    )
    backend.replies["ListApprovals"] = approval_api.ListApprovalsResponse(
        approvals=[
            approval_pb2.Approval(
                id="a1",
                execution_id="e1",
                step_id="check",
                title=HOSTILE,
                approvers=["reviewer@example.com"],
                artifacts=[
                    approval_pb2.Artifact(
                        name="draft", reference="javascript:alert(1)", text=HOSTILE
                    )
                ],
            )
        ]
    )


async def test_hostile_step_output_and_errors_are_escaped(
    client: Client, backend: FakeBackend
) -> None:
    serve_execution(backend)
    await sign_in(client)
    reply = await client.get("/executions/e1")
    assert reply.status == 200
    page = await reply.text()
    assert "<script>alert" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page
    # The JSON the page script reads cannot close its <script> element either.
    data = re.search(r'<script type="application/json" id="execution-data">(.*?)</script>', page)
    assert data is not None
    assert json.loads(data.group(1))["steps"][0]["output"] == HOSTILE
    assert 'href="javascript:' not in page  # an artifact reference is a link only when http(s)
    assert "earlier iterations (3)" in page
    assert "iteration 1 · completed" in page


async def test_every_call_carries_the_signed_in_persons_token(
    client: Client, backend: FakeBackend
) -> None:
    serve_execution(backend)
    await sign_in(client, "lead-token")
    assert (await client.get("/executions/e1")).status == 200
    assert [method for method, _, _ in backend.calls] == [
        "GetExecution",
        "GetDefinition",
        "ListApprovals",
    ]
    assert {token for _, _, token in backend.calls} == {"lead-token"}


async def test_a_refusal_is_shown_with_its_status_and_reason(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["CancelExecution"] = ServiceError(
        "PERMISSION_DENIED", f"not yours {HOSTILE}", "MISSING_PERMISSION", "execution"
    )
    csrf = await sign_in(client)
    reply = await client.post("/executions/e1/cancel", data={"csrf": csrf, "reason": "stop"})
    assert reply.status == 403
    page = await reply.text()
    assert "Could not cancel the execution" in page
    assert "PERMISSION_DENIED" in page
    assert "MISSING_PERMISSION" in page
    assert "<script>alert" not in page


async def test_an_unreachable_service_is_a_page_not_a_crash(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["ListExecutions"] = ServiceError("UNAVAILABLE", "did not answer")
    await sign_in(client)
    reply = await client.get("/executions?status=bogus&process=x")
    assert reply.status == 502
    assert "UNAVAILABLE" in await reply.text()
    ((_, request, _),) = backend.calls
    assert request.status == pb.EXECUTION_STATUS_UNSPECIFIED  # an unknown filter is ignored


async def test_executions_are_filtered_by_process_and_status(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["ListExecutions"] = api.ListExecutionsResponse(
        executions=[execution()], next_page_token="tok/en+1"
    )
    await sign_in(client)
    page = await (await client.get("/executions?process=review&status=failed")).text()
    ((_, request, _),) = backend.calls
    assert request.process_name == "review"
    assert request.status == pb.EXECUTION_STATUS_FAILED
    assert 'href="/executions/e1"' in page
    assert "page=tok/en%2B1" in page


async def test_starting_with_input_that_is_not_a_json_object_is_refused_before_any_call(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["GetDefinition"] = definition_api.GetDefinitionResponse(
        definition=definition_pb2.ProcessDefinition(name="review", version="1.0", spec=spec())
    )
    backend.replies["ListExecutions"] = api.ListExecutionsResponse()
    csrf = await sign_in(client)
    for text in ("[1, 2]", "{not json", '{"x": NaN}', "[" * 20_000):
        reply = await client.post("/processes/review/start", data={"csrf": csrf, "input": text})
        assert reply.status == 400, text[:20]
    assert "TriggerProcess" not in [method for method, _, _ in backend.calls]


async def test_starting_triggers_as_the_person_and_opens_the_execution(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["TriggerProcess"] = api.TriggerProcessResponse(execution=execution())
    csrf = await sign_in(client)
    reply = await client.post(
        "/processes/review/start",
        data={"csrf": csrf, "input": '{"topic": "x"}', "version": "1.0", "request_id": "k1"},
        allow_redirects=False,
    )
    assert reply.status == 303
    assert reply.headers["Location"] == "/executions/e1"
    ((_, request, token),) = backend.calls
    assert (request.process_name, request.version, request.request_id) == ("review", "1.0", "k1")
    assert request.input["topic"] == "x"
    assert token == "reviewer-token"


def fact(sequence: int, message: Any) -> api.WatchExecutionResponse:
    packed = AnyMessage()
    packed.Pack(message)
    return api.WatchExecutionResponse(
        sequence=sequence, type=message.DESCRIPTOR.full_name, fact=packed
    )


def events(body: str) -> list[tuple[str, str, Any]]:
    found = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((fields["event"], fields.get("id", ""), json.loads(fields["data"])))
    return found


async def test_the_live_timeline_streams_facts_then_the_state_then_the_end(
    client: Client, backend: FakeBackend
) -> None:
    serve_execution(backend, pb.EXECUTION_STATUS_COMPLETED)
    backend.facts = [
        fact(1, facts_pb2.StepStarted(step_id="draft", kind=pb.STEP_KIND_AGENT_TASK, iteration=1)),
        fact(2, facts_pb2.StepCompleted(step_id="draft", output=HOSTILE)),
    ]
    await sign_in(client)
    reply = await client.get("/executions/e1/events", headers={"Last-Event-ID": "0"})
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    seen = events(await reply.text())
    kinds = [event for event, _, _ in seen]
    assert kinds[0] == "state"
    assert kinds[-2:] == ["state", "end"]
    facts = [(event_id, data) for event, event_id, data in seen if event == "fact"]
    assert [event_id for event_id, _ in facts] == ["1", "2"]
    assert facts[0][1]["line"] == "draft started"
    assert seen[-1][2] == {"status": "completed"}
    watch = next(request for method, request, _ in backend.calls if method == "WatchExecution")
    assert watch.execution_id == "e1"


async def test_the_live_timeline_resumes_after_the_last_event_it_sent(
    client: Client, backend: FakeBackend
) -> None:
    serve_execution(backend)
    await sign_in(client)
    await (await client.get("/executions/e1/events", headers={"Last-Event-ID": "41"})).text()
    watch = next(request for method, request, _ in backend.calls if method == "WatchExecution")
    assert watch.after_sequence == 41


async def test_the_live_timeline_says_when_the_service_refuses(
    client: Client, backend: FakeBackend
) -> None:
    serve_execution(backend)
    backend.stream_error = ServiceError("PERMISSION_DENIED", "no", "MISSING_PERMISSION")
    await sign_in(client)
    seen = events(await (await client.get("/executions/e1/events")).text())
    assert seen[-1] == (
        "failure",
        "",
        {"status": "PERMISSION_DENIED", "reason": "MISSING_PERMISSION", "message": "no"},
    )


def test_the_graph_has_the_steps_dependencies_and_gateway_routes() -> None:
    graph = process_graph(spec())
    assert [node["id"] for node in graph["nodes"]] == ["draft", "check", "route", "publish"]
    assert [node["kind"] for node in graph["nodes"]] == [
        "agent_task",
        "human_approval",
        "gateway",
        "notification",
    ]
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    assert set(edges) == {
        ("draft", "check"),
        ("check", "route"),
        ("route", "draft"),
        ("route", "publish"),
    }
    assert edges[("route", "draft")]["kind"] == "route"
    assert "at most 3 times" in edges[("route", "draft")]["label"]
    assert edges[("route", "publish")]["label"] == "default"


def test_the_vendored_layout_library_is_the_recorded_release() -> None:
    vendor = Path(__file__).resolve().parents[1] / "trinity_console" / "static" / "vendor"
    digest = hashlib.sha256((vendor / "dagre.min.js").read_bytes()).hexdigest()
    assert digest in (vendor / "README.md").read_text()
    assert "Permission is hereby granted" in (vendor / "dagre.LICENSE").read_text()


async def test_a_quiet_timeline_sends_keep_alive_comments(
    client: Client, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    serve_execution(backend)
    backend.hold = asyncio.Event()
    await sign_in(client)
    reply = await client.get("/executions/e1/events")
    received = b""
    while b": keep-alive" not in received:
        received += await reply.content.readany()
    backend.hold.set()
    rest = (received + await reply.content.read()).decode()
    assert rest.rstrip().endswith('data: {"status": "running"}')


INPUTS = """
name: review
inputs:
  topic: {type: string, required: true, description: "what <b>to</b> research"}
  rounds: {type: integer, default: 2}
steps:
  - id: draft
    agent_task: {agent: writer, message: "{{ input.topic }} {{ input.rounds }}"}
"""


async def test_the_start_form_lists_the_declared_inputs_and_starts_from_their_defaults(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["GetDefinition"] = definition_api.GetDefinitionResponse(
        definition=definition_pb2.ProcessDefinition(
            name="review", version="1.0", spec=spec_to_proto(parse_process(INPUTS))
        )
    )
    backend.replies["ListExecutions"] = api.ListExecutionsResponse()
    csrf = await sign_in(client)
    page = await (await client.get("/processes/review")).text()
    assert "<code>topic</code>" in page
    assert "what &lt;b&gt;to&lt;/b&gt; research" in page
    textarea = re.search(r'<textarea name="input"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert textarea is not None
    assert json.loads(html.unescape(textarea.group(1))) == {"topic": "", "rounds": 2}

    # A refused start shows the person's own text again, to correct it.
    reply = await client.post(
        "/processes/review/start", data={"csrf": csrf, "input": '{"topic": "x",'}
    )
    assert reply.status == 400
    assert "{&#34;topic&#34;: &#34;x&#34;," in await reply.text()


def compensated_execution() -> pb.Execution:
    found = execution(pb.EXECUTION_STATUS_COMPENSATION_FAILED)
    found.compensation.CopyFrom(
        pb.CompensationProgress(
            reason=pb.COMPENSATION_REASON_FAILURE,
            failed_step_id="book",
            steps=[
                pb.StepCompensation(
                    step_id="charge",
                    iteration=1,
                    status=pb.STEP_COMPENSATION_STATUS_COMPENSATED,
                    attempt=1,
                    output=HOSTILE,
                ),
                pb.StepCompensation(
                    step_id="book",
                    iteration=2,
                    status=pb.STEP_COMPENSATION_STATUS_FAILED,
                    attempt=3,
                    error=types_pb2.Failure(code="UNDO_FAILED", message=HOSTILE),
                ),
                pb.StepCompensation(
                    step_id="reserve", iteration=1, status=pb.STEP_COMPENSATION_STATUS_PENDING
                ),
            ],
        )
    )
    return found


async def test_a_compensation_is_shown_with_each_undo_and_its_end_is_final(
    client: Client, backend: FakeBackend
) -> None:
    serve_execution(backend)
    backend.replies["GetExecution"] = api.GetExecutionResponse(execution=compensated_execution())
    await sign_in(client)
    page = await (await client.get("/executions/e1")).text()
    assert '<span class="status compensation_failed" id="status">compensation failed</span>' in page
    assert 'id="live" class="live">finished<' in page  # final: nothing more to follow
    section = page[page.index('id="compensation"') :]
    assert "failure: 1/3 undone · failed at book" in section
    rows = re.findall(r'<tr data-undo="([^"]+)">(.*?)</tr>', section, re.S)
    assert [key for key, _ in rows] == ["charge#1", "book#2", "reserve#1"]
    assert 'class="status compensated"' in rows[0][1]
    assert "UNDO_FAILED" in rows[1][1] and ">3<" in rows[1][1]
    assert "<script>alert" not in page and "<img src=x" not in page
    # No action is offered on a final compensation (not even retry).
    assert all(f'data-action="{a}" hidden' in page for a in ("pause", "resume", "retry", "cancel"))


async def test_cancel_asks_for_compensation_only_when_ticked(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["CancelExecution"] = api.CancelExecutionResponse(execution=execution())
    csrf = await sign_in(client)
    for form, compensate in (
        ({"csrf": csrf, "reason": "stop", "compensate": "on"}, True),
        ({"csrf": csrf, "reason": "stop"}, False),
        ({"csrf": csrf, "reason": "stop", "compensate": "yes please"}, False),
    ):
        backend.calls.clear()
        reply = await client.post("/executions/e1/cancel", data=form, allow_redirects=False)
        assert reply.status == 303
        ((method, request, _),) = backend.calls
        assert method == "CancelExecution" and request.compensate is compensate


async def test_executions_are_filtered_by_the_compensation_statuses(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["ListExecutions"] = api.ListExecutionsResponse()
    await sign_in(client)
    for status, value in (
        ("compensating", pb.EXECUTION_STATUS_COMPENSATING),
        ("compensation_failed", pb.EXECUTION_STATUS_COMPENSATION_FAILED),
    ):
        backend.calls.clear()
        page = await (await client.get(f"/executions?status={status}")).text()
        ((_, request, _),) = backend.calls
        assert request.status == value
        assert f'<option value="{status}" selected' in page
