"""Following an execution until it finishes: a live progress display, or silence.

The execution service streams the execution's facts (WatchExecution); each one
is a cue to read the execution again and report what changed. Where the stream
is not offered, the watcher polls GetExecution instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as approval_api
from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_cli.context import Context
from trinity_cli.errors import CliError, ExitCode
from trinity_cli.render import duration, enum_name, money, one_line, since, to_dict

FINISHED = {
    pb.EXECUTION_STATUS_COMPLETED: ExitCode.OK,
    pb.EXECUTION_STATUS_FAILED: ExitCode.EXECUTION_FAILED,
    pb.EXECUTION_STATUS_CANCELLED: ExitCode.EXECUTION_CANCELLED,
}
POLL_INTERVAL = 0.5


def status_name(execution: pb.Execution) -> str:
    return enum_name(pb.ExecutionStatus.Name(execution.status), "EXECUTION_STATUS_")


def step_status_name(step: pb.StepExecution) -> str:
    return enum_name(pb.StepStatus.Name(step.status), "STEP_STATUS_")


def kind_name(step: pb.StepExecution) -> str:
    return enum_name(pb.StepKind.Name(step.kind), "STEP_KIND_")


def exit_code_of(execution: pb.Execution) -> ExitCode:
    return FINISHED.get(execution.status, ExitCode.OK)


def progress(execution: pb.Execution) -> str:
    total = execution.progress.total or len(execution.steps)
    return f"{execution.progress.finished}/{total}"


def cost(execution: pb.Execution) -> str:
    spent = money(execution.total_cost) if execution.HasField("total_cost") else "0.00 USD"
    if execution.HasField("budget"):
        return f"{spent} of {money(execution.budget)}"
    return spent


@dataclass
class Watcher:
    """Reports the changes of one execution; ``live`` draws an in-place status line on a TTY."""

    ctx: Context
    execution_id: str
    report: bool = True
    timeout: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _hinted: set[str] = field(default_factory=set)
    _status_line: bool = False
    _start: float = 0.0

    @property
    def out(self) -> TextIO:
        return self.ctx.out

    @property
    def tty(self) -> bool:
        return not self.ctx.json and bool(getattr(self.out, "isatty", lambda: False)())

    def get(self) -> pb.Execution:
        reply = self.ctx.clients.call(
            "execution", "GetExecution", api.GetExecutionRequest(execution_id=self.execution_id)
        )
        execution: pb.Execution = reply.execution
        return execution

    def run(self) -> pb.Execution:
        """Follow the execution until it finishes; raises TIMED_OUT after ``timeout`` seconds."""
        self._start = self.clock()
        execution = self.get()
        if self.report and not self.ctx.json:
            self._print(
                f"execution {execution.id}: {execution.process_name} {execution.process_version}"
            )
        self._update(execution)
        if execution.status in FINISHED:
            return self._finish(execution)
        try:
            execution = self._follow_stream(execution)
        except CliError as error:
            if error.status != "UNIMPLEMENTED":
                raise
            execution = self._poll(execution)
        return self._finish(execution)

    def _remaining(self) -> float | None:
        if not self.timeout:
            return None
        return max(0.0, self.timeout - (self.clock() - self._start))

    def _timed_out(self, execution: pb.Execution) -> CliError:
        self._clear_status_line()
        return CliError(
            f"execution {execution.id} is still {status_name(execution)} after {self.timeout:g}s "
            f"({progress(execution)} steps); follow it with: "
            f"trinity-process executions watch {execution.id}",
            ExitCode.TIMED_OUT,
        )

    def _follow_stream(self, execution: pb.Execution) -> pb.Execution:
        request = api.WatchExecutionRequest(execution_id=self.execution_id)
        try:
            for _fact in self.ctx.clients.stream(
                "execution", "WatchExecution", request, timeout=self._remaining()
            ):
                execution = self.get()
                self._update(execution)
                if execution.status in FINISHED:
                    return execution
        except CliError as error:
            if error.status == "DEADLINE_EXCEEDED" and self.timeout:
                raise self._timed_out(self.get()) from None
            raise
        # The stream ends when the execution has finished; read the final state.
        return self._poll(execution)

    def _poll(self, execution: pb.Execution) -> pb.Execution:
        while execution.status not in FINISHED:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise self._timed_out(execution)
            time.sleep(POLL_INTERVAL if remaining is None else min(POLL_INTERVAL, remaining))
            execution = self.get()
            self._update(execution)
        return execution

    # ------------------------------------------------------------------ output

    def _update(self, execution: pb.Execution) -> None:
        if not self.report:
            return
        for step in execution.steps:
            state = (step.status, step.iteration, step.attempt)
            if self._seen.get(step.step_id) == state:
                continue
            self._seen[step.step_id] = state
            self._step_event(execution, step)
        self._draw_status_line(execution)

    def _step_event(self, execution: pb.Execution, step: pb.StepExecution) -> None:
        if step.status in (pb.STEP_STATUS_PENDING, pb.STEP_STATUS_UNSPECIFIED):
            return
        if self.ctx.json:
            event = {
                "event": "step",
                "execution_id": execution.id,
                "progress": to_dict(execution.progress),
                "total_cost": to_dict(execution.total_cost),
                "step": to_dict(step),
            }
            self.ctx.emit(event, lines=True)
            return
        self._print(
            f"[{progress(execution)}] {step.step_id} {step_status_name(step)}{_step_detail(step)}"
        )
        if step.kind == pb.STEP_KIND_HUMAN_APPROVAL and step.status == pb.STEP_STATUS_WAITING:
            self._approval_hint(execution, step)

    def _approval_hint(self, execution: pb.Execution, step: pb.StepExecution) -> None:
        key = f"{step.step_id}/{step.iteration}"
        if key in self._hinted:
            return
        self._hinted.add(key)
        approval_id = _pending_approval(self.ctx, execution.id, step.step_id)
        if approval_id:
            self._print(
                f"      waiting for a decision: trinity-process approvals approve {approval_id} "
                f"(or reject / request-changes)"
            )
        else:
            self._print("      waiting for a decision: trinity-process approvals list")

    def _print(self, line: str) -> None:
        self._clear_status_line()
        print(line, file=self.out, flush=True)

    def _draw_status_line(self, execution: pb.Execution) -> None:
        if not self.tty or execution.status in FINISHED:
            return
        running = ", ".join(execution.current_step_ids) or "-"
        line = (
            f"{status_name(execution)} [{progress(execution)}] · now: {running} · "
            f"cost {cost(execution)} · {duration(self.clock() - self._start)}"
        )
        self.out.write("\r\x1b[2K" + line[:200])
        self.out.flush()
        self._status_line = True

    def _clear_status_line(self) -> None:
        if self._status_line:
            self.out.write("\r\x1b[2K")
            self.out.flush()
            self._status_line = False

    def _finish(self, execution: pb.Execution) -> pb.Execution:
        self._clear_status_line()
        if self.report and not self.ctx.json:
            took = duration(elapsed(execution))
            line = f"{status_name(execution)} in {took} · {progress(execution)} steps · cost {cost(execution)}"
            if execution.HasField("error") and execution.error.code:
                line += f" · {execution.error.code}: {one_line(execution.error.message, 100)}"
            if execution.cancel_reason:
                line += f" · cancelled: {execution.cancel_reason}"
            print(line, file=self.out, flush=True)
        return execution


def elapsed(execution: pb.Execution) -> float:
    start = execution.start_time if execution.HasField("start_time") else execution.create_time
    if execution.HasField("end_time"):
        return (execution.end_time.ToDatetime() - start.ToDatetime()).total_seconds()
    return since(start)


def _step_detail(step: pb.StepExecution) -> str:
    parts: list[str] = []
    if step.iteration > 1:
        parts.append(f"iteration {step.iteration}")
    if step.attempt > 1:
        parts.append(f"attempt {step.attempt}")
    if step.status == pb.STEP_STATUS_COMPLETED:
        if step.decision:
            parts.append(step.decision)
        if step.HasField("cost") and (step.cost.units or step.cost.nanos):
            parts.append(money(step.cost))
        if step.HasField("duration"):
            parts.append(duration(step.duration))
        if step.output and not step.decision:
            parts.append(repr(one_line(step.output, 60)))
    elif step.status == pb.STEP_STATUS_FAILED and step.HasField("error"):
        parts.append(f"{step.error.code}: {one_line(step.error.message, 80)}")
    elif step.status == pb.STEP_STATUS_SKIPPED and step.skip_reason:
        parts.append(step.skip_reason)
    return (" · " + " · ".join(parts)) if parts else ""


def _pending_approval(ctx: Context, execution_id: str, step_id: str) -> str:
    """The id of the pending approval of a step, or "" when it cannot be found."""
    try:
        reply = ctx.clients.call(
            "approval",
            "ListApprovals",
            approval_api.ListApprovalsRequest(
                execution_id=execution_id, status=approval_pb2.APPROVAL_STATUS_PENDING
            ),
        )
    except CliError:
        return ""
    for approval in reply.approvals:
        if approval.step_id == step_id:
            approval_id: str = approval.id
            return approval_id
    return ""


def watch(ctx: Context, execution_id: str, *, report: bool, timeout: float) -> int:
    """Follow an execution; the exit code says how it ended."""
    execution = Watcher(ctx, execution_id, report=report, timeout=timeout).run()
    if ctx.json:
        ctx.emit({"execution": to_dict(execution)}, lines=report)
    return int(exit_code_of(execution))
