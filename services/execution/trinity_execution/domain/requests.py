"""The commands that start a step attempt, rendered from the definition's templates."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from trinity_execution.domain.commands import (
    AgentTaskWork,
    ApprovalArtifact,
    NotificationWork,
    RequestApproval,
    RequestWork,
    StepRef,
    ToolRunWork,
    WorkPayload,
)
from trinity_execution.domain.errors import FieldExpressionError
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.state import ExecutionState
from trinity_process_model.expressions import ExpressionError
from trinity_process_model.model import (
    AgentTaskConfig,
    Channel,
    HumanApprovalConfig,
    NotificationConfig,
    Output,
    Step,
    ToolRunConfig,
)

_SINGLE_REFERENCE = re.compile(r"^\{\{\s*([A-Za-z_][\w.\[\]'\"]*)\s*\}\}$")


def _render(process: CompiledProcess, text: str, context: Mapping[str, Any], field: str) -> str:
    try:
        return process.render(text, context)
    except ExpressionError as exc:
        raise FieldExpressionError(field, exc) from None


def work_payload(
    process: CompiledProcess, step: Step, context: Mapping[str, Any], state: ExecutionState
) -> WorkPayload:
    """The rendered payload of an agent task, tool run or notification step.

    Raises FieldExpressionError (naming the field) when a template does not render.
    """
    config = step.config
    if isinstance(config, AgentTaskConfig):
        # The step's own limit only: the process budget is checked on the costs reported
        # (a task is never cut short to what is left, so what it spends is always known).
        message = _render(process, config.message, context, "agent_task.message")
        return AgentTaskWork(config.agent, message, config.max_cost)
    if isinstance(config, ToolRunConfig):
        arguments = {
            k: _render(process, v, context, f"tool_run.arguments.{k}")
            for k, v in config.arguments.items()
        }
        return ToolRunWork(config.action, arguments)
    if isinstance(config, NotificationConfig):
        return NotificationWork(
            config.channel,
            _render(process, config.target, context, "notification.target"),
            _render(process, config.message, context, "notification.message"),
            _render(process, config.subject, context, "notification.subject"),
        )
    raise TypeError(f"step {step.id!r} is not work")  # pragma: no cover


def request_approval(
    process: CompiledProcess,
    step: Step,
    config: HumanApprovalConfig,
    context: Mapping[str, Any],
    key: str,
    ref: StepRef,
) -> RequestApproval:
    """Raises FieldExpressionError (naming the field) when a template does not render."""
    artifacts = tuple(
        ApprovalArtifact(
            _artifact_name(text, index),
            _render(process, text, context, f"human_approval.artifacts[{index}]"),
        )
        for index, text in enumerate(config.artifacts)
    )
    title = _render(process, config.title, context, "human_approval.title")
    return RequestApproval(
        key=key,
        correlation=ref,
        title=title or step.display_name,
        approvers=config.approvers,
        artifacts=artifacts,
        timeout=step.timeout,
        on_timeout=config.on_timeout,
        reminder_interval=config.reminder_interval,
        max_reminders=config.max_reminders,
    )


def _artifact_name(text: str, index: int) -> str:
    match = _SINGLE_REFERENCE.match(text.strip())
    return match.group(1) if match else f"artifact {index + 1}"


def informed_target(party: str) -> tuple[Channel, str]:
    """Where an informed party is told: ``<channel>:<target>`` names it outright
    (``email:ops@x.org``, ``slack:https://...``); an address with ``@`` is email; a URL is a
    webhook; any other name (an agent) gets a line in its inbox file (file channel)."""
    head, sep, rest = party.partition(":")
    if sep and head in {c.value for c in Channel} and not rest.startswith("//"):
        return Channel(head), rest
    if party.startswith(("http://", "https://")):
        return Channel.WEBHOOK, party
    if "@" in party:
        return Channel.EMAIL, party
    return Channel.FILE, party


def informed_requests(
    process: CompiledProcess,
    step: Step,
    base_key: str,
    iteration: int,
    output: str,
    decision: str,
) -> list[RequestWork]:
    """One notification per informed party of a completed step (fire and forget)."""
    if not step.informed:
        return []
    subject = f"[{process.name}] {step.display_name} completed"
    detail = f" (decision: {decision})" if decision else ""
    text = (
        f"Step {step.display_name!r} of process {process.name!r} completed"
        f" in iteration {iteration}{detail}.\n\n{output[:4000]}"
    )
    requests = []
    for index, party in enumerate(step.informed):
        channel, target = informed_target(party)
        requests.append(
            RequestWork(
                key=f"{base_key}/informed/{index}",
                payload=NotificationWork(channel, target, text, subject),
            )
        )
    return requests


def output_requests(
    process: CompiledProcess, execution_id: str, context: Mapping[str, Any]
) -> list[RequestWork]:
    """The process outputs, delivered when the execution completes.

    An output whose template does not render is still delivered, saying so: the
    execution has completed and must not be lost to a message template.
    """
    requests = []
    for index, output in enumerate(process.spec.outputs):
        requests.append(
            RequestWork(
                key=f"{execution_id}/outputs/{index}",
                payload=_render_output(process, output, context),
            )
        )
    return requests


def _render_output(
    process: CompiledProcess, output: Output, context: Mapping[str, Any]
) -> NotificationWork:
    try:
        target = process.render(output.target, context)
    except ExpressionError:
        target = output.target
    try:
        message = process.render(output.message, context)
    except ExpressionError as exc:
        message = f"The output message could not be rendered: {exc}"
    try:
        subject = process.render(output.subject, context)
    except ExpressionError:
        subject = output.subject
    return NotificationWork(output.channel, target, message, subject)
