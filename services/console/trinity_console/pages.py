"""The pages: processes (as graphs), executions (filtered, one in detail), approvals,
and the forms that act in the person's name (start, cancel/pause/resume/retry, decide).

Each handler reads what it shows from the services with the person's token, and a
service's refusal (raised as ServiceError) is shown by the error page as it is.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

from aiohttp import web
from google.protobuf.struct_pb2 import Struct

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as approval_api
from trinity.process.definition.v1 import definition_pb2
from trinity.process.definition.v1 import definition_service_pb2 as definition_api
from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1 import execution_service_pb2 as execution_api
from trinity_console.auth import current_session
from trinity_console.backend import ServiceError
from trinity_console.rendering import BACK, DOING, SETTINGS, context, render
from trinity_console.views import approval_view, execution_view, process_graph, process_inputs

STATUSES = (
    "pending",
    "running",
    "paused",
    "completed",
    "failed",
    "cancelled",
    "compensating",
    "compensation_failed",
)
DECISIONS = {
    "approve": (approval_pb2.DECISION_APPROVE, "Approved."),
    "reject": (approval_pb2.DECISION_REJECT, "Rejected."),
    "request_changes": (approval_pb2.DECISION_REQUEST_CHANGES, "Changes requested."),
}
ACTIONS = ("cancel", "pause", "resume", "retry")
PAGE_SIZE = 50
MAX_FIELD = 4000


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/processes", processes)
    router.add_get("/processes/{name}", process)
    router.add_post("/processes/{name}/start", start)
    router.add_get("/executions", executions)
    router.add_get("/executions/{id}", execution)
    router.add_post("/executions/{id}/{action}", act)
    router.add_get("/approvals", approvals)
    router.add_post("/approvals/{id}/decide", decide)


def _field(form: Any, name: str, limit: int = MAX_FIELD) -> str:
    value = form.get(name)
    if not isinstance(value, str) or len(value) > limit:
        return ""
    return value.strip()


def _request_id(form: Any) -> str:
    """The form's idempotency key, so a form posted twice acts once."""
    return _field(form, "request_id", 100) or str(uuid.uuid4())


# ------------------------------------------------------------------- processes


async def processes(request: web.Request) -> web.Response:
    backend, token = context(request)
    reply = await backend.call(
        "definition",
        "ListDefinitions",
        definition_api.ListDefinitionsRequest(
            status=definition_pb2.DEFINITION_STATUS_PUBLISHED, page_size=500
        ),
        token,
    )
    latest: dict[str, definition_pb2.ProcessDefinition] = {}
    for definition in reply.definitions:
        known = latest.get(definition.name)
        if known is None or _version(definition.version) > _version(known.version):
            latest[definition.name] = definition
    rows = [
        {
            "name": d.name,
            "version": d.version,
            "description": d.spec.description,
            "steps": len(d.spec.steps),
        }
        for d in sorted(latest.values(), key=lambda d: d.name)
    ]
    return render(request, "processes.html", processes=rows)


def _version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


async def _definition(request: web.Request, name: str, version: str) -> Any:
    backend, token = context(request)
    reply = await backend.call(
        "definition",
        "GetDefinition",
        definition_api.GetDefinitionRequest(
            by_name=definition_api.NameSelector(name=name, version=version)
        ),
        token,
    )
    return reply.definition


async def process(
    request: web.Request, *, error: str = "", status: int = 200, sent_input: str = ""
) -> web.Response:
    backend, token = context(request)
    name = request.match_info["name"]
    version = request.query.get("version", "")[:20]
    definition = await _definition(request, name, version)
    inputs, start_input = process_inputs(definition.spec)
    recent = await backend.call(
        "execution",
        "ListExecutions",
        execution_api.ListExecutionsRequest(process_name=name, page_size=10),
        token,
    )
    return render(
        request,
        "process.html",
        http_status=status,
        definition={
            "name": definition.name,
            "version": definition.version,
            "description": definition.spec.description,
            "published": definition.publish_time.ToJsonString()[:19].replace("T", " "),
        },
        graph=process_graph(definition.spec),
        inputs=inputs,
        # After a refused start, the text the person sent, to correct it.
        start_input=sent_input or start_input,
        executions=[execution_view(e) for e in recent.executions],
        error=error,
    )


async def start(request: web.Request) -> web.Response:
    backend, token = context(request)
    name = request.match_info["name"]
    request[DOING] = "start the process"
    request[BACK] = f"/processes/{quote(name)}"
    form = await request.post()
    raw = _field(form, "input", 64 * 1024) or "{}"
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        return await process(
            request, error=f"The input is not JSON: {exc}", status=400, sent_input=raw
        )
    if not isinstance(value, dict):
        return await process(
            request, error="The input must be a JSON object.", status=400, sent_input=raw
        )
    payload = Struct()
    try:
        payload.update(value)
    except (ValueError, TypeError, RecursionError) as exc:
        return await process(
            request, error=f"The input cannot be sent: {exc}", status=400, sent_input=raw
        )
    reply = await backend.call(
        "execution",
        "TriggerProcess",
        execution_api.TriggerProcessRequest(
            request_id=_request_id(form),
            process_name=name,
            version=_field(form, "version", 20),
            input=payload,
            triggered_by=current_session(request).principal,
        ),
        token,
    )
    raise web.HTTPSeeOther(f"/executions/{quote(reply.execution.id)}")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# ------------------------------------------------------------------ executions


async def executions(request: web.Request) -> web.Response:
    backend, token = context(request)
    process_name = request.query.get("process", "")[:200]
    status = request.query.get("status", "")
    page_token = request.query.get("page", "")[:2000]
    query = execution_api.ListExecutionsRequest(
        process_name=process_name, page_size=PAGE_SIZE, page_token=page_token
    )
    if status in STATUSES:
        query.status = execution_pb2.ExecutionStatus.Value(f"EXECUTION_STATUS_{status.upper()}")
    else:
        status = ""
    reply = await backend.call("execution", "ListExecutions", query, token)
    return render(
        request,
        "executions.html",
        executions=[execution_view(e) for e in reply.executions],
        statuses=STATUSES,
        process=process_name,
        status=status,
        next_page=reply.next_page_token,
    )


async def execution(request: web.Request) -> web.Response:
    backend, token = context(request)
    execution_id = request.match_info["id"]
    reply = await backend.call(
        "execution",
        "GetExecution",
        execution_api.GetExecutionRequest(execution_id=execution_id),
        token,
    )
    view = execution_view(reply.execution)
    graph: dict[str, Any] | None = None
    try:
        definition = await backend.call(
            "definition",
            "GetDefinition",
            definition_api.GetDefinitionRequest(definition_id=reply.execution.process_id),
            token,
        )
        graph = process_graph(definition.definition.spec)
    except ServiceError:
        graph = None  # the timeline and the steps still show; the graph needs the definition
    pending = await backend.call(
        "approval",
        "ListApprovals",
        approval_api.ListApprovalsRequest(
            execution_id=execution_id, status=approval_pb2.APPROVAL_STATUS_PENDING
        ),
        token,
    )
    return render(
        request,
        "execution.html",
        execution=view,
        graph=graph,
        approvals=[approval_view(a) for a in pending.approvals],
        decided=DECISIONS.get(request.query.get("decided", ""), (0, ""))[1],
    )


async def act(request: web.Request) -> web.Response:
    backend, token = context(request)
    execution_id = request.match_info["id"]
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text="no such action")
    request[DOING] = f"{action} the execution"
    request[BACK] = f"/executions/{quote(execution_id)}"
    form = await request.post()
    key = _request_id(form)
    reason = _field(form, "reason", 1000)
    who = current_session(request).principal
    requests: dict[str, tuple[str, Any]] = {
        "cancel": (
            "CancelExecution",
            execution_api.CancelExecutionRequest(
                request_id=key,
                execution_id=execution_id,
                reason=reason,
                cancelled_by=who,
                # The box ticked: the completed steps' compensations run, latest first.
                compensate=form.get("compensate") == "on",
            ),
        ),
        "pause": (
            "PauseExecution",
            execution_api.PauseExecutionRequest(
                request_id=key, execution_id=execution_id, reason=reason
            ),
        ),
        "resume": (
            "ResumeExecution",
            execution_api.ResumeExecutionRequest(request_id=key, execution_id=execution_id),
        ),
        "retry": (
            "RetryExecution",
            execution_api.RetryExecutionRequest(request_id=key, execution_id=execution_id),
        ),
    }
    method, message = requests[action]
    await backend.call("execution", method, message, token)
    raise web.HTTPSeeOther(f"/executions/{quote(execution_id)}")


# ------------------------------------------------------------------- approvals


async def approvals(request: web.Request) -> web.Response:
    backend, token = context(request)
    session = current_session(request)
    # With authentication off nobody is known: every pending approval shows.
    mine = session.principal if request.app[SETTINGS].authentication else ""
    reply = await backend.call(
        "approval",
        "ListPendingApprovals",
        approval_api.ListPendingApprovalsRequest(approver=mine, page_size=100),
        token,
    )
    return render(
        request,
        "approvals.html",
        approvals=[approval_view(a) for a in reply.approvals],
        decided=DECISIONS.get(request.query.get("decided", ""), (0, ""))[1],
        mine=mine,
    )


async def decide(request: web.Request) -> web.Response:
    backend, token = context(request)
    request[DOING] = "record your decision"
    request[BACK] = "/approvals"
    form = await request.post()
    choice = _field(form, "decision", 40)
    if choice not in DECISIONS:
        raise web.HTTPBadRequest(text="decision must be approve, reject or request_changes")
    decision, _said = DECISIONS[choice]
    reply = await backend.call(
        "approval",
        "SubmitDecision",
        approval_api.SubmitDecisionRequest(
            request_id=_request_id(form),
            approval_id=request.match_info["id"],
            decision=decision,
            comment=_field(form, "comment"),
        ),
        token,
    )
    back = _field(form, "back", 20)
    if back == "execution":
        raise web.HTTPSeeOther(f"/executions/{quote(reply.approval.execution_id)}?decided={choice}")
    raise web.HTTPSeeOther(f"/approvals?decided={choice}")
