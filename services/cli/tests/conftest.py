"""The CLI against real gRPC servers: small in-memory stand-ins of the four services.

One grpc server hosts all four services on a free port. Errors are answered the
way the real services answer them (status code, ErrorInfo reason, BadRequest
field violations), through the platform's error mapping.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.approval.v1 import approval_service_pb2_grpc as approval_grpc
from trinity.process.common.v1 import types_pb2
from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity.process.definition.v1 import definition_service_pb2_grpc as definition_grpc
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1 import execution_service_pb2_grpc as execution_grpc
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1 import work_service_pb2_grpc as work_grpc
from trinity_cli import watch
from trinity_cli.main import main
from trinity_platform.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TrinityError,
    Unauthenticated,
)
from trinity_platform.grpc_errors import to_grpc_status
from trinity_platform.testing.ports import free_port

D = definition_pb2
E = execution_pb2
TOKENS = {"tok-alice": "alice@example.com", "tok-bob": "bob@example.com"}


def refuse(context: grpc.ServicerContext, error: TrinityError) -> Any:
    context.abort_with_status(to_grpc_status(error))


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


# ------------------------------------------------------------------ definition


class FakeDefinitions(definition_grpc.DefinitionServiceServicer):
    def __init__(self) -> None:
        self.items: list[D.ProcessDefinition] = []
        self.ids = itertools.count(1)

    def _parse(self, text: str, context: grpc.ServicerContext) -> D.ProcessSpec:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return refuse(
                context,
                InvalidArgument(
                    "the process file is not valid YAML",
                    [FieldViolation("", "line 1, column 1: not YAML")],
                    reason="DEFINITION_UNPARSABLE",
                ),
            )
        if not isinstance(data, dict) or not data.get("name"):
            return refuse(
                context,
                InvalidArgument(
                    "the definition is invalid",
                    [FieldViolation("name", "is required")],
                    reason="DEFINITION_INVALID",
                ),
            )
        spec = D.ProcessSpec(name=data["name"], description=data.get("description", ""))
        for step in data.get("steps", []):
            spec.steps.add(id=step["id"], agent_task=D.AgentTask(agent="echo", message="hi"))
        return spec

    def _violations(self, spec: D.ProcessSpec) -> list[FieldViolation]:
        if spec.name.startswith("bad"):
            return [
                FieldViolation("steps[1].depends_on[0]", "unknown step 'nowhere'"),
                FieldViolation("steps[2].gateway.routes", "a gateway needs routes"),
            ]
        return []

    def _get(self, definition_id: str, context: grpc.ServicerContext) -> D.ProcessDefinition:
        for item in self.items:
            if item.id == definition_id:
                return item
        return refuse(context, NotFound("no such definition", reason="DEFINITION_NOT_FOUND"))

    def CreateDraft(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = self._parse(request.yaml, context)
        item = D.ProcessDefinition(
            id=f"def-{next(self.ids)}",
            name=spec.name,
            status=D.DEFINITION_STATUS_DRAFT,
            spec=spec,
            revision=1,
            created_by=request.created_by,
            update_time=_now(),
        )
        self.items.append(item)
        return definition_service_pb2.CreateDraftResponse(definition=item)

    def UpdateDraft(self, request: Any, context: grpc.ServicerContext) -> Any:
        item = self._get(request.definition_id, context)
        if item.revision != request.expected_revision:
            refuse(context, Aborted("the draft changed meanwhile", reason="STALE_REVISION"))
        item.spec.CopyFrom(self._parse(request.yaml, context))
        item.revision += 1
        return definition_service_pb2.UpdateDraftResponse(definition=item)

    def ValidateDefinition(self, request: Any, context: grpc.ServicerContext) -> Any:
        spec = self._parse(request.yaml, context)
        violations = self._violations(spec)
        return definition_service_pb2.ValidateDefinitionResponse(
            valid=not violations,
            violations=[D.Violation(field=v.field, description=v.description) for v in violations],
        )

    def PublishDefinition(self, request: Any, context: grpc.ServicerContext) -> Any:
        item = self._get(request.definition_id, context)
        violations = self._violations(item.spec)
        if violations:
            refuse(
                context,
                InvalidArgument(
                    "the definition is invalid", violations, reason="DEFINITION_INVALID"
                ),
            )
        published = [
            d for d in self.items if d.name == item.name and d.status != D.DEFINITION_STATUS_DRAFT
        ]
        item.version = f"1.{len(published)}"
        item.status = D.DEFINITION_STATUS_PUBLISHED
        item.publish_time.CopyFrom(_now())
        return definition_service_pb2.PublishDefinitionResponse(definition=item)

    def ArchiveDefinition(self, request: Any, context: grpc.ServicerContext) -> Any:
        item = self._get(request.definition_id, context)
        if item.status != D.DEFINITION_STATUS_PUBLISHED:
            refuse(context, FailedPrecondition("not published", reason="DEFINITION_NOT_PUBLISHED"))
        item.status = D.DEFINITION_STATUS_ARCHIVED
        return definition_service_pb2.ArchiveDefinitionResponse(definition=item)

    def GetDefinition(self, request: Any, context: grpc.ServicerContext) -> Any:
        name, version = request.by_name.name, request.by_name.version
        matches = [
            d
            for d in self.items
            if d.name == name
            and d.version
            and (
                d.version == version or (not version and d.status == D.DEFINITION_STATUS_PUBLISHED)
            )
        ]
        if not matches:
            refuse(
                context,
                NotFound(f"no published definition {name!r}", reason="DEFINITION_NOT_FOUND"),
            )
        return definition_service_pb2.GetDefinitionResponse(definition=matches[-1])

    def ListDefinitions(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = [
            d
            for d in reversed(self.items)
            if (not request.status or d.status == request.status)
            and (not request.name or d.name == request.name)
        ]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = found[start : start + size]
        token = str(start + size) if start + size < len(found) else ""
        return definition_service_pb2.ListDefinitionsResponse(
            definitions=page, next_page_token=token
        )


# ------------------------------------------------------------------- execution


@dataclass
class Script:
    """How a fake execution of a process goes: one step finishes per read."""

    steps: tuple[str, ...] = ("research", "review", "publish")
    ending: int = E.EXECUTION_STATUS_COMPLETED
    waits_at: str = ""  # an approval step where the execution stays waiting
    # Failed: the completed steps are then undone, one per read, latest first.
    compensates: bool = False


SCRIPTS = {
    "it3": Script(),
    "fails": Script(ending=E.EXECUTION_STATUS_FAILED),
    "forever": Script(ending=E.EXECUTION_STATUS_RUNNING),
    "gated": Script(ending=E.EXECUTION_STATUS_RUNNING, waits_at="review"),
    "saga": Script(ending=E.EXECUTION_STATUS_FAILED, compensates=True),
}


@dataclass
class FakeRun:
    execution: E.Execution
    script: Script
    reads: int = 0


class FakeExecutions(execution_grpc.ExecutionServiceServicer):
    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.ids = itertools.count(1)
        self.watch_implemented = True
        self.triggers: list[Any] = []
        self.hold: threading.Event | None = None  # a never-ending stream waits for this

    def _run(self, execution_id: str, context: grpc.ServicerContext) -> FakeRun:
        run = self.runs.get(execution_id)
        if run is None:
            refuse(
                context, NotFound(f"no execution {execution_id!r}", reason="EXECUTION_NOT_FOUND")
            )
        assert run is not None
        return run

    def _compensate(self, execution: E.Execution) -> E.Execution:
        """One read: the running undo is done, the next one runs (or the execution ends)."""
        undos = execution.compensation.steps
        for index, undo in enumerate(undos):
            if undo.status == E.STEP_COMPENSATION_STATUS_RUNNING:
                undo.status = E.STEP_COMPENSATION_STATUS_COMPENSATED
                undo.output = f"{undo.step_id} undone"
                if index + 1 < len(undos):
                    undos[index + 1].status = E.STEP_COMPENSATION_STATUS_RUNNING
                    undos[index + 1].attempt = 1
                else:
                    execution.status = E.EXECUTION_STATUS_FAILED
                    execution.end_time.CopyFrom(_now())
                break
        return execution

    def _advance(self, run: FakeRun) -> E.Execution:
        execution = run.execution
        if execution.status == E.EXECUTION_STATUS_COMPENSATING:
            return self._compensate(execution)
        if execution.status != E.EXECUTION_STATUS_RUNNING:
            return execution
        run.reads += 1
        done = min(run.reads, len(run.script.steps))
        if run.script.waits_at:
            done = min(done, run.script.steps.index(run.script.waits_at))
        del execution.steps[:]
        del execution.current_step_ids[:]
        for index, step_id in enumerate(run.script.steps):
            step = execution.steps.add(step_id=step_id, kind=E.STEP_KIND_AGENT_TASK, iteration=1)
            if index < done:
                step.status = E.STEP_STATUS_COMPLETED
                step.output = f"{step_id} done"
                step.cost.CopyFrom(types_pb2.Money(currency_code="USD", nanos=120_000_000))
                step.duration.FromSeconds(2)
            elif index == done:
                step.status = E.STEP_STATUS_RUNNING
                if step_id == run.script.waits_at:
                    step.kind = E.STEP_KIND_HUMAN_APPROVAL
                    step.status = E.STEP_STATUS_WAITING
                execution.current_step_ids.append(step_id)
            else:
                step.status = E.STEP_STATUS_PENDING
        execution.progress.finished = done
        execution.total_cost.CopyFrom(
            types_pb2.Money(currency_code="USD", nanos=120_000_000 * done)
        )
        if done == len(run.script.steps) and run.script.ending != E.EXECUTION_STATUS_RUNNING:
            execution.status = run.script.ending
            execution.end_time.CopyFrom(_now())
            if run.script.ending == E.EXECUTION_STATUS_FAILED:
                execution.error.code = "AGENT_UNAVAILABLE"
                execution.error.message = "the agent did not answer"
                execution.steps[-1].status = E.STEP_STATUS_FAILED
                execution.steps[-1].error.CopyFrom(execution.error)
                if run.script.compensates:
                    execution.status = E.EXECUTION_STATUS_COMPENSATING
                    execution.ClearField("end_time")
                    completed = [s.step_id for s in execution.steps[:-1]]
                    execution.compensation.reason = E.COMPENSATION_REASON_FAILURE
                    for step_id in reversed(completed):
                        execution.compensation.steps.add(
                            step_id=step_id,
                            iteration=1,
                            status=E.STEP_COMPENSATION_STATUS_PENDING,
                        )
                    execution.compensation.steps[0].status = E.STEP_COMPENSATION_STATUS_RUNNING
                    execution.compensation.steps[0].attempt = 1
        return execution

    def TriggerProcess(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.triggers.append(request)
        script = SCRIPTS.get(request.process_name)
        if script is None:
            refuse(
                context,
                NotFound(
                    f"no published definition {request.process_name!r}",
                    reason="DEFINITION_NOT_FOUND",
                ),
            )
        assert script is not None
        execution = E.Execution(
            id=f"exe-{next(self.ids)}",
            process_name=request.process_name,
            process_version="1.0",
            status=E.EXECUTION_STATUS_RUNNING,
            input=request.input,
            triggered_by=request.triggered_by,
            trigger_kind=E.TRIGGER_KIND_MANUAL,
            create_time=_now(),
            start_time=_now(),
            progress=E.Progress(finished=0, total=len(script.steps)),
            budget=types_pb2.Money(currency_code="USD", units=5),
        )
        self.runs[execution.id] = FakeRun(execution, script)
        return execution_service_pb2.TriggerProcessResponse(execution=execution)

    def GetExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        run = self._run(request.execution_id, context)
        return execution_service_pb2.GetExecutionResponse(execution=self._advance(run))

    def WatchExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not self.watch_implemented:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        run = self._run(request.execution_id, context)
        ref = E.ExecutionRef(execution_id=run.execution.id, process_name=run.execution.process_name)
        cost = types_pb2.Money(currency_code="USD", nanos=120_000_000)
        stream: list[Any] = []
        for index, step_id in enumerate(run.script.steps):
            started = execution_facts.StepStarted(
                execution=ref, step_id=step_id, iteration=1, attempt=1
            )
            stream.append(started)
            if step_id == run.script.waits_at:
                started.kind = E.STEP_KIND_HUMAN_APPROVAL
                break
            last = index == len(run.script.steps) - 1
            if last and run.script.ending == E.EXECUTION_STATUS_FAILED:
                error = types_pb2.Failure(
                    code="AGENT_UNAVAILABLE", message="the agent did not answer"
                )
                stream.append(
                    execution_facts.StepFailed(execution=ref, step_id=step_id, error=error)
                )
            elif not (last and run.script.ending == E.EXECUTION_STATUS_RUNNING):
                done = execution_facts.StepCompleted(
                    execution=ref, step_id=step_id, output=f"{step_id} done", cost=cost
                )
                done.duration.FromSeconds(2)
                stream.append(done)
        for sequence, fact in enumerate(stream, start=1):
            packed = any_pb2.Any()
            packed.Pack(fact)
            yield execution_service_pb2.WatchExecutionResponse(
                sequence=sequence, type=fact.DESCRIPTOR.full_name, fact=packed
            )
        never_ends = run.script.ending == E.EXECUTION_STATUS_RUNNING
        if never_ends and self.hold is not None:
            self.hold.wait(60)  # nothing happens meanwhile
        if never_ends and run.execution.status == E.EXECUTION_STATUS_RUNNING:  # until the deadline
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def ListExecutions(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = [
            r.execution
            for r in reversed(self.runs.values())
            if not request.process_name or r.execution.process_name == request.process_name
        ]
        return execution_service_pb2.ListExecutionsResponse(executions=found)

    def _set(self, request: Any, context: grpc.ServicerContext, status: int) -> E.Execution:
        run = self._run(request.execution_id, context)
        if run.execution.status in (E.EXECUTION_STATUS_COMPLETED, E.EXECUTION_STATUS_CANCELLED):
            refuse(
                context,
                FailedPrecondition("the execution has finished", reason="EXECUTION_FINISHED"),
            )
        run.execution.status = status  # type: ignore[assignment]
        return run.execution

    def CancelExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        execution = self._set(request, context, E.EXECUTION_STATUS_CANCELLED)
        execution.cancel_reason = request.reason
        return execution_service_pb2.CancelExecutionResponse(execution=execution)

    def PauseExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        execution = self._set(request, context, E.EXECUTION_STATUS_PAUSED)
        return execution_service_pb2.PauseExecutionResponse(execution=execution)

    def ResumeExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        execution = self._set(request, context, E.EXECUTION_STATUS_RUNNING)
        return execution_service_pb2.ResumeExecutionResponse(execution=execution)

    def RetryExecution(self, request: Any, context: grpc.ServicerContext) -> Any:
        execution = self._set(request, context, E.EXECUTION_STATUS_RUNNING)
        return execution_service_pb2.RetryExecutionResponse(execution=execution)


# -------------------------------------------------------------------- approval


class FakeApprovals(approval_grpc.ApprovalServiceServicer):
    def __init__(self) -> None:
        self.approvals = {
            "apr-1": approval_pb2.Approval(
                id="apr-1",
                execution_id="exe-1",
                step_id="review",
                iteration=1,
                title="Review the research",
                approvers=["alice@example.com"],
                status=approval_pb2.APPROVAL_STATUS_PENDING,
                deadline=_now(),
                artifacts=[approval_pb2.Artifact(name="research", text="findings")],
            )
        }

    def _principal(self, context: grpc.ServicerContext) -> str | None:
        for key, value in context.invocation_metadata():
            if key == "authorization":
                scheme, _, token = str(value).partition(" ")
                principal = TOKENS.get(token) if scheme == "Bearer" else None
                if principal is None:
                    refuse(
                        context,
                        Unauthenticated("invalid or unknown bearer token", reason="INVALID_TOKEN"),
                    )
                return principal
        return None

    def _get(self, approval_id: str, context: grpc.ServicerContext) -> approval_pb2.Approval:
        approval = self.approvals.get(approval_id)
        if approval is None:
            refuse(context, NotFound(f"no approval {approval_id!r}", reason="APPROVAL_NOT_FOUND"))
        assert approval is not None
        return approval

    def SubmitDecision(self, request: Any, context: grpc.ServicerContext) -> Any:
        principal = self._principal(context)
        approval = self._get(request.approval_id, context)
        if principal is None:
            refuse(
                context,
                Unauthenticated("a decision needs a bearer token", reason="UNAUTHENTICATED"),
            )
        if principal not in approval.approvers:
            refuse(
                context,
                PermissionDenied(f"{principal} is not an approver", reason="NOT_AN_APPROVER"),
            )
        if approval.status != approval_pb2.APPROVAL_STATUS_PENDING:
            refuse(
                context, FailedPrecondition("already decided", reason="APPROVAL_ALREADY_DECIDED")
            )
        approval.decision = request.decision
        approval.status = {
            approval_pb2.DECISION_APPROVE: approval_pb2.APPROVAL_STATUS_APPROVED,
            approval_pb2.DECISION_REJECT: approval_pb2.APPROVAL_STATUS_REJECTED,
            approval_pb2.DECISION_REQUEST_CHANGES: approval_pb2.APPROVAL_STATUS_NEEDS_CHANGES,
        }[request.decision]
        approval.decided_by = principal or ""
        approval.comment = request.comment
        return approval_service_pb2.SubmitDecisionResponse(approval=approval)

    def GetApproval(self, request: Any, context: grpc.ServicerContext) -> Any:
        return approval_service_pb2.GetApprovalResponse(
            approval=self._get(request.approval_id, context)
        )

    def ListPendingApprovals(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = [
            a
            for a in self.approvals.values()
            if a.status == approval_pb2.APPROVAL_STATUS_PENDING
            and (not request.approver or request.approver in a.approvers)
        ]
        return approval_service_pb2.ListPendingApprovalsResponse(approvals=found)

    def ListApprovals(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = [
            a
            for a in self.approvals.values()
            if a.execution_id == request.execution_id
            and (not request.status or a.status == request.status)
        ]
        return approval_service_pb2.ListApprovalsResponse(approvals=found)


# ------------------------------------------------------------------------ work


class FakeWork(work_grpc.WorkServiceServicer):
    def ListWork(self, request: Any, context: grpc.ServicerContext) -> Any:
        work = [
            work_pb2.WorkRequest(
                id="wrk-1",
                kind=work_pb2.WORK_KIND_AGENT_TASK,
                status=work_pb2.WORK_STATUS_COMPLETED,
                payload=work_pb2.WorkPayload(
                    agent_task=work_pb2.AgentTaskPayload(agent="researcher", message="go")
                ),
                result=work_pb2.WorkResult(
                    output="three findings",
                    cost=types_pb2.Money(currency_code="USD", nanos=250_000_000),
                ),
            ),
            work_pb2.WorkRequest(
                id="wrk-2",
                kind=work_pb2.WORK_KIND_TOOL_RUN,
                status=work_pb2.WORK_STATUS_FAILED,
                error=types_pb2.Failure(code="TIMEOUT", message="took too long"),
            ),
        ]
        if request.execution_id:
            for item in work:
                item.correlation.execution_id = request.execution_id
        return work_service_pb2.ListWorkResponse(work=work)


# --------------------------------------------------------------------- fixtures


@dataclass
class FakeSuite:
    port: int
    definitions: FakeDefinitions = field(default_factory=FakeDefinitions)
    executions: FakeExecutions = field(default_factory=FakeExecutions)
    approvals: FakeApprovals = field(default_factory=FakeApprovals)
    work: FakeWork = field(default_factory=FakeWork)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSuite]:
    """The four services on one real gRPC server; the CLI's targets point at it."""
    suite = FakeSuite(port=free_port())
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    definition_grpc.add_DefinitionServiceServicer_to_server(suite.definitions, server)
    execution_grpc.add_ExecutionServiceServicer_to_server(suite.executions, server)
    approval_grpc.add_ApprovalServiceServicer_to_server(suite.approvals, server)
    work_grpc.add_WorkServiceServicer_to_server(suite.work, server)
    server.add_insecure_port(suite.target)
    server.start()
    for service in ("definition", "execution", "approval", "work"):
        monkeypatch.setenv(f"TRINITY_{service.upper()}_TARGET", suite.target)
    monkeypatch.setattr(watch, "POLL_INTERVAL", 0.01)
    monkeypatch.setattr(watch, "HINT_PAUSE", 0.01)
    try:
        yield suite
    finally:
        server.stop(None)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run ``trinity-process ARGS`` in this process; its exit code and what it printed."""
    monkeypatch.delenv("TRINITY_TOKEN", raising=False)

    def run(*args: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return Result(code, out.getvalue(), err.getvalue())

    return run
