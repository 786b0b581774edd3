"""Following an execution until it finishes: a live progress display, or silence.

The execution service streams the execution's facts (WatchExecution, from the
first one, so a late watcher sees the whole story): each becomes a line, and the
execution is read again for the progress (steps done / total, the running steps,
the cost so far), drawn as a status line that updates in place on a terminal.
Where the stream is not offered, the watcher polls GetExecution and reports the
step changes it sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from google.protobuf.message import Message

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as approval_api
from trinity.process.definition.v1 import definition_pb2
from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity.process.execution.v1 import facts_pb2 as facts
from trinity_cli.compensation import (
    compensation_started,
    compensation_summary,
    describe_compensation_fact,
    describe_undo,
    undoing,
)
from trinity_cli.context import Context
from trinity_cli.errors import CliError, ExitCode
from trinity_cli.render import duration, enum_name, money, one_line, since, to_dict
from trinity_platform.envelope import EnvelopeError, message_class
from trinity_process_model.proto_codec import money_from_proto

FINISHED = {
    pb.EXECUTION_STATUS_COMPLETED: ExitCode.OK,
    pb.EXECUTION_STATUS_FAILED: ExitCode.EXECUTION_FAILED,
    pb.EXECUTION_STATUS_CANCELLED: ExitCode.EXECUTION_CANCELLED,
    pb.EXECUTION_STATUS_COMPENSATION_FAILED: ExitCode.EXECUTION_FAILED,
}
POLL_INTERVAL = 0.5
HINT_ATTEMPTS = 10
HINT_PAUSE = 0.2
# Who paused or resumed is the caller's principal; without authentication there is none.
UNKNOWN_CALLER = "an unauthenticated caller"
REDRAW_INTERVAL = 1.0  # the status line's clock moves at least this often on a terminal


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
        over = _overspend(execution)
        return f"{spent} of {money(execution.budget)}" + (f", {over} over" if over else "")
    return spent


def _overspend(execution: pb.Execution) -> str:
    """How far the total is above the budget ('' within it): money spent always counts."""
    total, budget = execution.total_cost, execution.budget
    if total.currency_code != budget.currency_code:
        return ""
    spent, limit = money_from_proto(total).amount, money_from_proto(budget).amount
    return f"{spent - limit} {total.currency_code}" if spent > limit else ""


def elapsed(execution: pb.Execution) -> float:
    start = execution.start_time if execution.HasField("start_time") else execution.create_time
    if execution.HasField("end_time"):
        return (execution.end_time.ToDatetime() - start.ToDatetime()).total_seconds()
    return since(start)


@dataclass
class Watcher:
    """Follows one execution; with ``report``, says what happens on the way."""

    ctx: Context
    execution_id: str
    report: bool = True
    timeout: float = 0.0
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    _undos: dict[str, tuple[int, int]] = field(default_factory=dict)  # polling: undo → state
    _hinted: set[str] = field(default_factory=set)
    _status_line: bool = False
    _start: float = 0.0
    _shown: pb.Execution | None = None  # what the status line shows
    _output: threading.Lock = field(default_factory=threading.Lock)
    _stopped: threading.Event = field(default_factory=threading.Event)

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
        ticker = threading.Thread(target=self._tick, name="status-line", daemon=True)
        if self.report and self.tty:
            ticker.start()
        try:
            try:
                execution = self._follow_stream(execution)
            except CliError as error:
                if error.status != "UNIMPLEMENTED":
                    raise
                execution = self._poll(execution)
        finally:
            self._stopped.set()
            if ticker.is_alive():
                ticker.join()
            self._clear_status_line()
        return self._finish(execution)

    def _tick(self) -> None:
        """Redraw the status line while nothing happens, so its clock keeps moving."""
        while not self._stopped.wait(REDRAW_INTERVAL):
            if self._shown is not None:
                self._draw_status_line(self._shown)

    # ----------------------------------------------------------------- following

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
        tally = Tally.of(execution)
        try:
            for response in self.ctx.clients.stream(
                "execution", "WatchExecution", request, timeout=self._remaining()
            ):
                fact = _unpack(response)
                tally.count(fact)
                if self.tty or _asks_for_approval(fact):
                    execution = self.get()  # for the status line, or to find the approval
                self._on_fact(execution, response, fact, tally)
                self._draw_status_line(execution)
        except CliError as error:
            if error.status == "DEADLINE_EXCEEDED" and self.timeout:
                raise self._timed_out(self.get()) from None
            raise
        # The stream ends when the execution has finished; make sure of it.
        return self._poll(self.get(), report_steps=False)

    def _poll(self, execution: pb.Execution, report_steps: bool = True) -> pb.Execution:
        if report_steps:
            self._on_snapshot(execution)
        while execution.status not in FINISHED:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                raise self._timed_out(execution)
            time.sleep(POLL_INTERVAL if remaining is None else min(POLL_INTERVAL, remaining))
            execution = self.get()
            if report_steps:
                self._on_snapshot(execution)
        return execution

    # --------------------------------------------------------------- reporting

    def _on_fact(
        self, execution: pb.Execution, response: Any, fact: Message | None, tally: Tally
    ) -> None:
        if not self.report:
            return
        if self.ctx.json:
            event = {"event": "fact", "sequence": response.sequence, "type": response.type}
            if fact is not None:
                event["fact"] = to_dict(fact)
            self.ctx.emit(event, lines=True)
            return
        line = describe_fact(fact, tally.kinds) if fact is not None else response.type
        if line:
            self._print(f"[{tally}] {line}")
        if isinstance(fact, facts.StepStarted) and _asks_for_approval(fact):
            self._approval_hint(execution, fact.step_id, fact.iteration)

    def _on_snapshot(self, execution: pb.Execution) -> None:
        """Without the stream: report what changed since the last read, step by step."""
        if not self.report:
            return
        for step in execution.steps:
            state = (step.status, step.iteration, step.attempt)
            if self._seen.get(step.step_id) == state:
                continue
            self._seen[step.step_id] = state
            if step.status in (pb.STEP_STATUS_PENDING, pb.STEP_STATUS_UNSPECIFIED):
                continue
            if self.ctx.json:
                event = {"event": "step", "execution_id": execution.id, "step": to_dict(step)}
                self.ctx.emit(event, lines=True)
                continue
            self._print(f"[{progress(execution)}] {describe_step(step)}")
            if step.kind == pb.STEP_KIND_HUMAN_APPROVAL and step.status == pb.STEP_STATUS_WAITING:
                self._approval_hint(execution, step.step_id, step.iteration)
        if execution.HasField("compensation"):
            self._on_compensation_snapshot(execution)
        self._draw_status_line(execution)

    def _on_compensation_snapshot(self, execution: pb.Execution) -> None:
        """Without the stream: the compensation's start, then each undo's changes."""
        if not self._undos and not self.ctx.json:
            self._print(f"[{progress(execution)}] {compensation_started(execution)}")
        for undo in execution.compensation.steps:
            key, state = f"{undo.step_id}#{undo.iteration}", (undo.status, undo.attempt)
            if self._undos.get(key) == state:
                continue
            self._undos[key] = state
            line = describe_undo(undo)
            if line is None:
                continue
            if self.ctx.json:
                event = {"event": "undo", "execution_id": execution.id, "undo": to_dict(undo)}
                self.ctx.emit(event, lines=True)
            else:
                self._print(f"[{progress(execution)}] {line}")

    def _approval_hint(self, execution: pb.Execution, step_id: str, iteration: int) -> None:
        """Say which approval to decide, while the step still waits for one."""
        key = f"{step_id}/{iteration}"
        waiting = any(
            s.step_id == step_id and s.status == pb.STEP_STATUS_WAITING for s in execution.steps
        )
        if key in self._hinted or not waiting:
            return
        self._hinted.add(key)
        # The execution asks the approval service for the approval after the step
        # started: give that request a moment to land.
        approval: approval_pb2.Approval | None = None
        for _ in range(HINT_ATTEMPTS):
            approval = _pending_approval(self.ctx, execution.id, step_id)
            if approval is not None:
                break
            time.sleep(HINT_PAUSE)
        if approval is not None:
            self._print(approval_hint(approval))
        else:
            self._print("      waiting for a decision: trinity-process approvals list")

    def _print(self, line: str) -> None:
        with self._output:
            self._clear_status_line()
            print(line, file=self.out, flush=True)

    def _draw_status_line(self, execution: pb.Execution) -> None:
        if not self.report or not self.tty or execution.status in FINISHED:
            return
        running = ", ".join(execution.current_step_ids) or undoing(execution) or "-"
        with self._output:
            self._shown = execution
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
            if execution.HasField("compensation"):
                line += f" · compensation {compensation_summary(execution)}"
            print(line, file=self.out, flush=True)
        return execution


@dataclass
class Tally:
    """Steps finished so far, counted from the facts as the service counts them.

    When a gateway loops back, the loop body (the target and what finished after it,
    the gateway included) starts over and no longer counts as finished.
    """

    total: int
    kinds: dict[str, int]
    finished: list[str] = field(default_factory=list)  # in the order they finished
    _looping_gateway: str = ""

    @classmethod
    def of(cls, execution: pb.Execution) -> Tally:
        kinds = {step.step_id: int(step.kind) for step in execution.steps}
        return cls(execution.progress.total or len(kinds), kinds)

    def count(self, fact: Message | None) -> None:
        if isinstance(fact, facts.StepStarted) and fact.step_id in self.finished:
            self.finished.remove(fact.step_id)
        elif isinstance(fact, facts.GatewayEvaluated):
            again = [self.finished.index(t) for t in fact.selected_targets if t in self.finished]
            if again:
                del self.finished[min(again) :]
                self._looping_gateway = fact.step_id
        elif isinstance(fact, facts.StepCompleted | facts.StepSkipped):
            if fact.step_id == self._looping_gateway:
                self._looping_gateway = ""  # it starts over with its loop
                return
            if fact.step_id in self.finished:
                self.finished.remove(fact.step_id)
            self.finished.append(fact.step_id)

    def __str__(self) -> str:
        return f"{len(self.finished)}/{self.total}"


def _asks_for_approval(fact: Message | None) -> bool:
    return isinstance(fact, facts.StepStarted) and fact.kind == pb.STEP_KIND_HUMAN_APPROVAL


def _unpack(response: Any) -> Message | None:
    try:
        fact = message_class(response.type)()
    except EnvelopeError:  # a fact type newer than this CLI
        return None
    return fact if response.fact.Unpack(fact) else None


def _suffix(iteration: int, attempt: int = 1) -> str:
    parts = []
    if iteration > 1:
        parts.append(f"iteration {iteration}")
    if attempt > 1:
        parts.append(f"attempt {attempt}")
    return "".join(f" · {part}" for part in parts)


def describe_fact(fact: Message, kinds: dict[str, int]) -> str:
    """One line for a fact of the execution; "" for those said otherwise or not worth a line."""
    if isinstance(fact, facts.StepStarted):
        if fact.kind == pb.STEP_KIND_GATEWAY:
            return ""  # GatewayEvaluated says what it chose
        waits = {
            pb.STEP_KIND_HUMAN_APPROVAL: "waiting for a decision",
            pb.STEP_KIND_TIMER: "waiting",
            pb.STEP_KIND_WAIT_FOR_MESSAGE: "waiting for a message",
            pb.STEP_KIND_SUB_PROCESS: "waiting for its child execution",
        }
        verb = waits.get(fact.kind, "started")
        return f"{fact.step_id} {verb}{_suffix(fact.iteration, fact.attempt)}"
    if isinstance(fact, facts.StepCompleted):
        if kinds.get(fact.step_id) == pb.STEP_KIND_GATEWAY:
            return ""  # GatewayEvaluated said it
        parts = [f"{fact.step_id} completed{_suffix(fact.iteration, fact.attempt)}"]
        if fact.decision:
            parts.append(fact.decision)
        if fact.cost.units or fact.cost.nanos:
            parts.append(money(fact.cost))
        if duration(fact.duration) != "-":
            parts.append(duration(fact.duration))
        if fact.output and not fact.decision and kinds.get(fact.step_id) != pb.STEP_KIND_TIMER:
            parts.append(repr(one_line(fact.output, 60)))
        return " · ".join(parts)
    if isinstance(fact, facts.StepFailed):
        line = f"{fact.step_id} failed{_suffix(fact.iteration, fact.attempt)} · {fact.error.code}: {one_line(fact.error.message, 80)}"
        return line + (" · will retry" if fact.will_retry else "")
    if isinstance(fact, facts.StepSkipped):
        return f"{fact.step_id} skipped · {fact.reason}"
    if isinstance(fact, facts.GatewayEvaluated):
        chosen = ", ".join(fact.selected_targets) or "nothing"
        gateway = enum_name(definition_pb2.GatewayType.Name(fact.gateway_type), "GATEWAY_TYPE_")
        return f"{fact.step_id} chose {chosen} ({gateway}){_suffix(fact.iteration)}"
    if isinstance(fact, facts.BudgetWarning):
        return f"budget warning: {money(fact.total_cost)} of {money(fact.budget)} spent"
    if isinstance(fact, facts.BudgetExceeded):
        action = enum_name(definition_pb2.BudgetAction.Name(fact.action), "BUDGET_ACTION_")
        return f"budget exceeded: {money(fact.total_cost)} of {money(fact.budget)} ({action})"
    if isinstance(fact, facts.ProcessPaused):
        return f"paused by {fact.paused_by or UNKNOWN_CALLER}" + (
            f": {fact.reason}" if fact.reason else ""
        )
    if isinstance(fact, facts.ProcessResumed):
        return f"resumed by {fact.resumed_by or UNKNOWN_CALLER}"
    if isinstance(fact, facts.ExecutionMigrated):
        return (
            f"moved from version {fact.from_version} to {fact.execution.process_version} "
            f"by {fact.migrated_by or UNKNOWN_CALLER}"
        )
    compensation = describe_compensation_fact(fact)
    if compensation is not None:
        return compensation
    return ""  # ProcessStarted / Completed / Failed / Cancelled: the header and footer


def describe_step(step: pb.StepExecution) -> str:
    """One line for a step as GetExecution shows it (the polling fallback)."""
    parts = [f"{step.step_id} {step_status_name(step)}{_suffix(step.iteration, step.attempt)}"]
    if step.status == pb.STEP_STATUS_COMPLETED:
        if step.decision:
            parts.append(step.decision)
        if step.cost.units or step.cost.nanos:
            parts.append(money(step.cost))
        if duration(step.duration) != "-":
            parts.append(duration(step.duration))
        if step.kind == pb.STEP_KIND_GATEWAY:
            parts.append(f"→ {step.output or '-'}")
        elif step.output and not step.decision and step.kind != pb.STEP_KIND_TIMER:
            parts.append(repr(one_line(step.output, 60)))
    elif step.status == pb.STEP_STATUS_FAILED and step.HasField("error"):
        parts.append(f"{step.error.code}: {one_line(step.error.message, 80)}")
    elif step.status == pb.STEP_STATUS_SKIPPED and step.skip_reason:
        parts.append(step.skip_reason)
    return " · ".join(parts)


def approval_hint(approval: approval_pb2.Approval) -> str:
    """Who may decide, and the command that decides as them (their bearer token)."""
    who = " or ".join(approval.approvers) or "an approver"
    return (
        f"      waiting for a decision by {who}: trinity-process approvals approve "
        f"{approval.id} --token <their token> (or reject / request-changes)"
    )


def _pending_approval(
    ctx: Context, execution_id: str, step_id: str
) -> approval_pb2.Approval | None:
    """The pending approval of a step, or None when it cannot be found."""
    try:
        reply = ctx.clients.call(
            "approval",
            "ListApprovals",
            approval_api.ListApprovalsRequest(
                execution_id=execution_id, status=approval_pb2.APPROVAL_STATUS_PENDING
            ),
        )
    except CliError:
        return None
    for approval in reply.approvals:
        if approval.step_id == step_id:
            found: approval_pb2.Approval = approval
            return found
    return None


def watch(ctx: Context, execution_id: str, *, report: bool, timeout: float) -> int:
    """Follow an execution; the exit code says how it ended."""
    execution = Watcher(ctx, execution_id, report=report, timeout=timeout).run()
    if ctx.json:
        ctx.emit({"execution": to_dict(execution)}, lines=report)
    return int(exit_code_of(execution))
