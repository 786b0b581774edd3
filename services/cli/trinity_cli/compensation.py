"""How the CLI shows compensation: one line per compensation fact (``--watch``) and the
undo table of ``executions status``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message

from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import facts_pb2 as facts
from trinity_cli.render import enum_name, one_line


def _reason(value: pb.CompensationReason.ValueType) -> str:
    return enum_name(pb.CompensationReason.Name(value), "COMPENSATION_REASON_")


def _at(step_id: str, iteration: int, attempt: int = 1) -> str:
    parts = [step_id]
    if iteration > 1:
        parts.append(f"iteration {iteration}")
    if attempt > 1:
        parts.append(f"attempt {attempt}")
    return " · ".join(parts)


def _targets(targets: Iterable[Any]) -> str:
    """``review, draft#2``: the completions to undo (anything with step_id and iteration)."""
    return ", ".join(t.step_id + (f"#{t.iteration}" if t.iteration > 1 else "") for t in targets)


def describe_compensation_fact(fact: Message) -> str | None:
    """The line of a compensation fact; None for any other fact."""
    if isinstance(fact, facts.CompensationStarted):
        return f"compensating ({_reason(fact.reason)}): undoing {_targets(fact.targets)}"
    if isinstance(fact, facts.StepCompensated):
        line = f"{_at(fact.step_id, fact.iteration, fact.attempt)} compensated"
        return line + (f" · {one_line(fact.output, 60)!r}" if fact.output else "")
    if isinstance(fact, facts.CompensationFailed):
        return (
            f"compensation of {_at(fact.step_id, fact.iteration, fact.attempt)} failed · "
            f"{fact.error.code}: {one_line(fact.error.message, 80)} · "
            f"{fact.not_compensated} not compensated"
        )
    if isinstance(fact, facts.CompensationCompleted):
        return f"compensation completed · {fact.compensated} undone"
    return None


def compensation_started(e: pb.Execution) -> str:
    """The line that says a compensation began (polling mode's CompensationStarted)."""
    return (
        f"compensating ({_reason(e.compensation.reason)}): undoing {_targets(e.compensation.steps)}"
    )


def describe_undo(undo: pb.StepCompensation) -> str | None:
    """The line of one undo as GetExecution shows it (polling mode); None while pending."""
    at = _at(undo.step_id, undo.iteration, undo.attempt or 1)
    if undo.status == pb.STEP_COMPENSATION_STATUS_RUNNING:
        return f"undoing {at}"
    if undo.status == pb.STEP_COMPENSATION_STATUS_WAITING:
        return f"undo of {at} waiting to retry"
    if undo.status == pb.STEP_COMPENSATION_STATUS_COMPENSATED:
        return f"{at} compensated" + (f" · {one_line(undo.output, 60)!r}" if undo.output else "")
    if undo.status == pb.STEP_COMPENSATION_STATUS_FAILED:
        return (
            f"compensation of {at} failed · {undo.error.code}: {one_line(undo.error.message, 80)}"
        )
    return None


def compensation_summary(e: pb.Execution) -> str:
    """``status``'s compensation line: why, how far, which step failed."""
    progress = e.compensation
    done = sum(1 for s in progress.steps if s.status == pb.STEP_COMPENSATION_STATUS_COMPENSATED)
    line = f"{_reason(progress.reason)}: {done}/{len(progress.steps)} undone"
    if progress.failed_step_id:
        line += f" · failed at {progress.failed_step_id}"
    return line


def undoing(e: pb.Execution) -> str:
    """The completion being undone now, for the status line ('' when none)."""
    active = (pb.STEP_COMPENSATION_STATUS_RUNNING, pb.STEP_COMPENSATION_STATUS_WAITING)
    for s in e.compensation.steps:
        if s.status in active:
            return "undoing " + s.step_id + (f"#{s.iteration}" if s.iteration > 1 else "")
    return ""


def compensation_rows(e: pb.Execution) -> list[list[str]]:
    """One row per completion to undo, in the order they run."""
    rows = []
    for s in e.compensation.steps:
        status = enum_name(pb.StepCompensationStatus.Name(s.status), "STEP_COMPENSATION_STATUS_")
        if s.HasField("error") and s.error.code:
            result = f"{s.error.code}: {one_line(s.error.message, 50)}"
        else:
            result = one_line(s.output, 50) if s.output else "-"
        rows.append([s.step_id, str(s.iteration), status, str(s.attempt or "-"), result])
    return rows
