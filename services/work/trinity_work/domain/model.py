"""Value objects of the work context.

The payload, result and failure types are plain frozen values; the aggregate that
owns them lives in :mod:`trinity_work.domain.work`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from trinity_process_model.model import ActionKind, Channel, Money

__all__ = [
    "ActionKind",
    "AgentTask",
    "Channel",
    "Evidence",
    "EvidenceKind",
    "Failure",
    "FailureCode",
    "Money",
    "Notification",
    "Payload",
    "StepRef",
    "ToolRun",
    "WorkKind",
    "WorkResult",
    "WorkStatus",
    "kind_of",
]


class WorkKind(StrEnum):
    """What kind of work; also the last token of the work-queue subject."""

    AGENT_TASK = "agent_task"
    TOOL_RUN = "tool_run"
    NOTIFICATION = "notification"


class WorkStatus(StrEnum):
    REQUESTED = "requested"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {WorkStatus.COMPLETED, WorkStatus.FAILED, WorkStatus.CANCELLED, WorkStatus.TIMED_OUT}
)


class FailureCode(StrEnum):
    """Stable failure codes the work service and its executors use."""

    AGENT_UNAVAILABLE = "AGENT_UNAVAILABLE"
    AGENT_ERROR = "AGENT_ERROR"
    TIMEOUT = "TIMEOUT"
    CREDENTIALS_MISSING = "CREDENTIALS_MISSING"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    TOOL_NOT_CONFIGURED = "TOOL_NOT_CONFIGURED"
    TOOL_FAILED = "TOOL_FAILED"
    ARGUMENT_NOT_ALLOWED = "ARGUMENT_NOT_ALLOWED"
    CHANNEL_NOT_CONFIGURED = "CHANNEL_NOT_CONFIGURED"
    TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
    DELIVERY_FAILED = "DELIVERY_FAILED"
    EXECUTOR_ERROR = "EXECUTOR_ERROR"


@dataclass(frozen=True)
class StepRef:
    """The step attempt of an execution that asked for the work (all empty: none)."""

    execution_id: str = ""
    step_id: str = ""
    iteration: int = 0
    attempt: int = 0


@dataclass(frozen=True)
class AgentTask:
    agent: str
    message: str
    max_cost: Money | None = None


@dataclass(frozen=True)
class ToolRun:
    action: ActionKind
    arguments: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    channel: Channel
    target: str
    subject: str
    message: str


Payload = AgentTask | ToolRun | Notification


def kind_of(payload: Payload) -> WorkKind:
    if isinstance(payload, AgentTask):
        return WorkKind.AGENT_TASK
    if isinstance(payload, ToolRun):
        return WorkKind.TOOL_RUN
    return WorkKind.NOTIFICATION


class EvidenceKind(StrEnum):
    LINK = "link"
    PATCH = "patch"
    SUMMARY = "summary"
    LOG = "log"
    OUTPUT = "output"  # an output too large to keep inline


@dataclass(frozen=True)
class Evidence:
    kind: EvidenceKind
    name: str = ""
    uri: str = ""
    text: str = ""


@dataclass(frozen=True)
class WorkResult:
    output: str = ""
    structured_output: Mapping[str, Any] | None = None
    cost: Money | None = None
    context_used: int = 0
    evidence: tuple[Evidence, ...] = ()

    def with_structured_output(self) -> WorkResult:
        """The result with ``structured_output`` parsed from the output when it is a JSON
        object and the executor did not set it."""
        if self.structured_output is not None:
            return self
        text = self.output.strip()
        if not (text.startswith("{") and text.endswith("}")):
            return self
        try:
            value = json.loads(text)
        except ValueError:
            return self
        if not isinstance(value, dict):
            return self
        return dataclasses.replace(self, structured_output=value)


@dataclass(frozen=True)
class Failure:
    code: str
    message: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
