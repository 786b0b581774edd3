"""JSON columns ↔ domain values (payload, result, failure)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from trinity_work.domain.model import (
    ActionKind,
    AgentTask,
    Channel,
    Evidence,
    EvidenceKind,
    Failure,
    Money,
    Notification,
    Payload,
    ToolRun,
    WorkResult,
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def money_to_dict(money: Money | None) -> dict[str, str] | None:
    if money is None:
        return None
    return {"amount": str(money.amount), "currency": money.currency}


def money_from_dict(data: dict[str, str] | None) -> Money | None:
    if not data:
        return None
    return Money(Decimal(data["amount"]), data["currency"])


def payload_to_json(payload: Payload) -> str:
    if isinstance(payload, AgentTask):
        data: dict[str, Any] = {
            "agent_task": {
                "agent": payload.agent,
                "message": payload.message,
                "max_cost": money_to_dict(payload.max_cost),
            }
        }
    elif isinstance(payload, ToolRun):
        data = {"tool_run": {"action": payload.action.value, "arguments": dict(payload.arguments)}}
    else:
        data = {
            "notification": {
                "channel": payload.channel.value,
                "target": payload.target,
                "subject": payload.subject,
                "message": payload.message,
            }
        }
    return _dumps(data)


def payload_from_json(raw: str) -> Payload:
    data = json.loads(raw)
    if "agent_task" in data:
        item = data["agent_task"]
        return AgentTask(item["agent"], item["message"], money_from_dict(item.get("max_cost")))
    if "tool_run" in data:
        item = data["tool_run"]
        return ToolRun(ActionKind(item["action"]), dict(item.get("arguments") or {}))
    item = data["notification"]
    return Notification(Channel(item["channel"]), item["target"], item["subject"], item["message"])


def result_to_json(result: WorkResult | None) -> str | None:
    if result is None:
        return None
    return _dumps(
        {
            "output": result.output,
            "structured_output": (
                dict(result.structured_output) if result.structured_output is not None else None
            ),
            "cost": money_to_dict(result.cost),
            "context_used": result.context_used,
            "evidence": [
                {"kind": e.kind.value, "name": e.name, "uri": e.uri, "text": e.text}
                for e in result.evidence
            ],
        }
    )


def result_from_json(raw: str | None) -> WorkResult | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return WorkResult(
        output=data["output"],
        structured_output=data.get("structured_output"),
        cost=money_from_dict(data.get("cost")),
        context_used=int(data.get("context_used") or 0),
        evidence=tuple(
            Evidence(EvidenceKind(e["kind"]), e["name"], e["uri"], e["text"])
            for e in data.get("evidence") or ()
        ),
    )


def failure_to_json(failure: Failure | None) -> str | None:
    if failure is None:
        return None
    return _dumps(
        {"code": failure.code, "message": failure.message, "details": dict(failure.details)}
    )


def failure_from_json(raw: str | None) -> Failure | None:
    if raw is None:
        return None
    data = json.loads(raw)
    return Failure(data["code"], data["message"], dict(data.get("details") or {}))
