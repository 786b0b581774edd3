"""Protobuf messages → plain dicts the templates and the page scripts draw.

Pure functions, no I/O. Text from the services (step outputs, errors, comments) is
passed on as text: the templates escape it and the scripts set it as textContent.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.message import Message

from trinity.process.approval.v1 import approval_pb2
from trinity.process.definition.v1 import definition_pb2
from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_cli.compensation import compensation_summary
from trinity_cli.render import duration, enum_name, money, timestamp
from trinity_cli.watch import describe_fact
from trinity_platform.envelope import EnvelopeError, message_class
from trinity_platform.json_values import from_value, struct_to_dict

# COMPENSATION_FAILED is final too (an operator cannot re-run a failed undo).
FINISHED = ("completed", "failed", "cancelled", "compensation_failed")
# Which execution actions make sense in which status (the services still decide).
ACTIONS = {
    "running": ("pause", "cancel"),
    "pending": ("cancel",),
    "paused": ("resume", "cancel"),
    "failed": ("retry",),
}
STEP_KINDS = ("agent_task", "human_approval", "gateway", "timer", "notification", "tool_run")


def execution_status(value: pb.ExecutionStatus.ValueType) -> str:
    return enum_name(pb.ExecutionStatus.Name(value), "EXECUTION_STATUS_")


def step_status(value: pb.StepStatus.ValueType) -> str:
    return enum_name(pb.StepStatus.Name(value), "STEP_STATUS_")


def approval_status(value: approval_pb2.ApprovalStatus.ValueType) -> str:
    return enum_name(approval_pb2.ApprovalStatus.Name(value), "APPROVAL_STATUS_")


def _detail(step: definition_pb2.Step) -> str:
    kind = step.WhichOneof("kind")
    if kind == "agent_task":
        return f"agent {step.agent_task.agent}"
    if kind == "human_approval":
        return "approval: " + ", ".join(step.human_approval.approvers)
    if kind == "gateway":
        return enum_name(definition_pb2.GatewayType.Name(step.gateway.type), "GATEWAY_TYPE_")
    if kind == "timer":
        wait = step.timer.WhichOneof("wait")
        return f"wait {duration(step.timer.duration)}" if wait == "duration" else "wait until"
    if kind == "notification":
        return f"notify {step.notification.target}"
    if kind == "tool_run":
        return "tool"
    return ""


def process_graph(spec: definition_pb2.ProcessSpec) -> dict[str, Any]:
    """Steps as nodes; dependencies and gateway routes as edges (a route replaces the
    plain dependency on its gateway, and carries the route's condition)."""
    ids = {step.id for step in spec.steps}
    nodes = [
        {
            "id": step.id,
            "label": step.name or step.id,
            "kind": step.WhichOneof("kind") or "",
            "detail": _detail(step),
        }
        for step in spec.steps
    ]
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for step in spec.steps:
        for dependency in step.depends_on:
            if dependency in ids:
                edges[(dependency, step.id)] = {
                    "source": dependency,
                    "target": step.id,
                    "kind": "depends",
                    "label": "",
                }
    for step in spec.steps:
        if step.WhichOneof("kind") != "gateway":
            continue
        for route in step.gateway.routes:
            if route.target not in ids:
                continue
            label = "default" if route.is_default else route.condition
            if route.max_iterations:
                label += f" (at most {route.max_iterations} times)"
            edges[(step.id, route.target)] = {
                "source": step.id,
                "target": route.target,
                "kind": "route",
                "label": label[:80],
            }
    return {"nodes": nodes, "edges": list(edges.values())}


_PLACEHOLDERS: dict[str, Any] = {
    "string": "",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "object": {},
    "array": [],
}


def process_inputs(spec: definition_pb2.ProcessSpec) -> tuple[list[dict[str, Any]], str]:
    """The declared inputs (name, type, required, default, description) and a JSON object
    to start from: each input's default, else an empty value of its type."""
    declared = []
    start: dict[str, Any] = {}
    for item in spec.inputs:
        kind = enum_name(definition_pb2.InputType.Name(item.type), "INPUT_TYPE_")
        default = from_value(item.default_value) if item.HasField("default_value") else None
        declared.append(
            {
                "name": item.name,
                "type": kind,
                "required": item.required,
                "default": "" if default is None else json.dumps(default),
                "description": item.description,
            }
        )
        start[item.name] = default if default is not None else _PLACEHOLDERS.get(kind, "")
    return declared, json.dumps(start, indent=2) if start else "{}"


def _failure(failure: Any) -> dict[str, str] | None:
    if not failure.code and not failure.message:
        return None
    return {"code": failure.code, "message": failure.message}


def step_view(step: pb.StepExecution) -> dict[str, Any]:
    return {
        "id": step.step_id,
        "name": step.name or step.step_id,
        "kind": enum_name(pb.StepKind.Name(step.kind), "STEP_KIND_"),
        "status": step_status(step.status),
        "iteration": step.iteration,
        "attempt": step.attempt,
        "started": timestamp(step.start_time, step.HasField("start_time")),
        "duration": duration(step.duration) if step.HasField("duration") else "-",
        "cost": money(step.cost) if step.HasField("cost") else "-",
        "output": step.output,
        "decision": step.decision,
        "skip_reason": step.skip_reason,
        "error": _failure(step.error) if step.HasField("error") else None,
        "earlier": [_iteration_view(earlier) for earlier in step.iterations],
        "earlier_omitted": step.iterations_omitted,
    }


def _iteration_view(earlier: pb.StepIteration) -> dict[str, Any]:
    """One earlier iteration of a looping step, as one line of text and its output."""
    parts = [f"iteration {earlier.iteration}", step_status(earlier.status)]
    if earlier.decision:
        parts.append(earlier.decision)
    if earlier.HasField("duration"):
        parts.append(duration(earlier.duration))
    if earlier.HasField("cost") and (earlier.cost.units or earlier.cost.nanos):
        parts.append(money(earlier.cost))
    if earlier.HasField("error") and earlier.error.code:
        parts.append(f"{earlier.error.code}: {earlier.error.message}")
    if earlier.skip_reason:
        parts.append(earlier.skip_reason)
    output = earlier.output + (" …(cut)" if earlier.output_truncated else "")
    return {"line": " · ".join(parts), "output": output}


def execution_view(execution: pb.Execution) -> dict[str, Any]:
    status = execution_status(execution.status)
    spent = money(execution.total_cost) if execution.HasField("total_cost") else "0.00 USD"
    budget = money(execution.budget) if execution.HasField("budget") else ""
    return {
        "id": execution.id,
        "process_name": execution.process_name,
        "process_version": execution.process_version,
        "process_id": execution.process_id,
        "status": status,
        "status_label": status.replace("_", " "),
        "finished": status in FINISHED,
        "actions": list(ACTIONS.get(status, ())),
        "triggered_by": execution.triggered_by,
        "input": json.dumps(struct_to_dict(execution.input), indent=2),
        "created": timestamp(execution.create_time, execution.HasField("create_time")),
        "ended": timestamp(execution.end_time, execution.HasField("end_time")),
        "progress": f"{execution.progress.finished}/{execution.progress.total}",
        "cost": spent,
        "budget": budget,
        "budget_used": _share(execution) if budget else None,
        "current": list(execution.current_step_ids),
        "error": _failure(execution.error) if execution.HasField("error") else None,
        "cancel_reason": execution.cancel_reason,
        "steps": [step_view(step) for step in execution.steps],
        "compensation": compensation_view(execution)
        if execution.HasField("compensation")
        else None,
    }


def compensation_view(execution: pb.Execution) -> dict[str, Any]:
    """The compensation: its summary line and one row per completion to undo, in the
    order they run (the reverse order of completion)."""
    undos = []
    for undo in execution.compensation.steps:
        status = enum_name(pb.StepCompensationStatus.Name(undo.status), "STEP_COMPENSATION_STATUS_")
        undos.append(
            {
                "key": f"{undo.step_id}#{undo.iteration}",
                "step_id": undo.step_id,
                "iteration": undo.iteration,
                "status": status,
                "attempt": undo.attempt or "-",
                "error": _failure(undo.error)
                if undo.HasField("error") and undo.error.code
                else None,
                "output": undo.output,
            }
        )
    return {"summary": compensation_summary(execution), "undos": undos}


def _share(execution: pb.Execution) -> int:
    """Percent of the budget spent (0-100, capped) for the budget bar."""
    limit = execution.budget.units * 1_000_000_000 + execution.budget.nanos
    spent = execution.total_cost.units * 1_000_000_000 + execution.total_cost.nanos
    return 0 if limit <= 0 else max(0, min(100, spent * 100 // limit))


def unpack_fact(response: api.WatchExecutionResponse) -> Message | None:
    try:
        fact = message_class(response.type)()
    except EnvelopeError:  # a fact type newer than this console
        return None
    return fact if response.fact.Unpack(fact) else None


def fact_view(response: api.WatchExecutionResponse, kinds: dict[str, int]) -> dict[str, Any]:
    """One timeline entry: sequence, time, short type name, and a line saying what happened."""
    fact = unpack_fact(response)
    name = response.type.rsplit(".", 1)[-1]
    line = describe_fact(fact, kinds) if fact is not None else ""
    step_id = getattr(fact, "step_id", "") if fact is not None else ""
    return {
        "sequence": response.sequence,
        "type": name,
        "time": timestamp(response.occur_time, response.HasField("occur_time")),
        "step": step_id,
        "line": line or _plain(name, fact, step_id),
    }


def _plain(name: str, fact: Message | None, step_id: str) -> str:
    if fact is None:
        return name
    if step_id and name.startswith("Step"):  # a gateway's start and end
        return f"{step_id} {name.removeprefix('Step').lower()}"
    if name == "ProcessCompleted":
        return f"completed · cost {money(fact.total_cost)}"  # type: ignore[attr-defined]
    if name == "ProcessFailed":
        error = fact.error  # type: ignore[attr-defined]
        return f"failed · {error.code}: {error.message}"
    if name == "ProcessCancelled":
        return f"cancelled by {fact.cancelled_by or '-'}"  # type: ignore[attr-defined]
    if name == "ProcessStarted":
        return f"started by {fact.triggered_by or '-'}"  # type: ignore[attr-defined]
    return name


def approval_view(approval: approval_pb2.Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "execution_id": approval.execution_id,
        "step_id": approval.step_id,
        "iteration": approval.iteration,
        "title": approval.title or approval.step_id,
        "approvers": list(approval.approvers),
        "deadline": timestamp(approval.deadline, approval.HasField("deadline")),
        "created": timestamp(approval.create_time, approval.HasField("create_time")),
        "status": approval_status(approval.status),
        "artifacts": [
            {"name": a.name, "reference": a.reference, "link": _link(a.reference), "text": a.text}
            for a in approval.artifacts
        ],
    }


def _link(reference: str) -> str:
    """A reference worth a link: http(s) only (never javascript: or data:)."""
    return reference if reference.lower().startswith(("https://", "http://")) else ""
