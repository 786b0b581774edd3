"""Command handlers of the execution service: trigger, cancel, pause, resume, retry.

Each runs its decision in one transaction together with the idempotency record
of its request_id, so a retry returns the first answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from trinity_execution import domain as d
from trinity_execution.application.deciding import decide_off_loop, decision_attempts
from trinity_execution.application.ports import (
    ConcurrentUpdate,
    DefinitionCatalog,
    ExecutionRow,
    ExecutionTransaction,
    ExecutionUnitOfWork,
    Presenter,
    PublishedDefinition,
    remembered_answer,
)
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.domain.errors import EXECUTION_DEPTH_EXCEEDED
from trinity_platform.admission import AdmissionLimit
from trinity_platform.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    TrinityError,
)
from trinity_platform.unit_of_work import Idempotency
from trinity_process_model.inputs import check_input
from trinity_process_model.model import ProcessSpec, Step

V = TypeVar("V")
TRIGGER_SCOPE = "execution.TriggerProcess"


@dataclass(frozen=True)
class Trigger:
    request_id: str
    process_name: str
    version: str
    input: dict[str, Any]
    triggered_by: str
    trigger_kind: d.TriggerKind = d.TriggerKind.MANUAL
    execution_id: str = ""
    """The id to give the execution (a child's, derived from its parent's step attempt);
    empty: a new random one."""
    parent: d.ParentLink | None = None


DEFAULT_MAX_DEPTH = 5
"""How deep sub-processes may nest (a child of a top-level execution is at depth 1)."""


@dataclass(frozen=True)
class Control:
    """Cancel, pause, resume or retry one execution."""

    request_id: str
    execution_id: str
    by: str = ""
    reason: str = ""
    step_id: str = ""
    compensate: bool = False
    """Cancel only: undo the completed steps first (their compensations)."""


def child_input(declared: dict[str, str], values: dict[str, str]) -> dict[str, Any]:
    """A sub_process step's rendered input: each value read as JSON where the child declares
    a non-string type (``declared``: name → type); text that is no JSON is left as text for
    the input check to refuse."""
    result: dict[str, Any] = {}
    for name, text in values.items():
        if declared.get(name, "string") != "string":
            try:
                result[name] = json.loads(text)
                continue
            except ValueError:
                pass
        result[name] = text
    return result


def require(field: str, value: str) -> None:
    if not value.strip():
        raise InvalidArgument(f"{field} is required", [FieldViolation(field, "must not be empty")])


def checked_input(spec: ProcessSpec, command: Trigger) -> dict[str, Any]:
    """The input to start with (defaults filled in); INVALID_ARGUMENT listing every problem
    when it does not match the inputs the process declares. An event's payload may carry
    more than the process declares: the rest is dropped, not refused."""
    values, problems = check_input(
        spec.inputs, command.input, ignore_undeclared=command.trigger_kind is d.TriggerKind.EVENT
    )
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise InvalidArgument(
            f"the input does not match the inputs process {spec.name!r} declares ({count})",
            [FieldViolation(p.field, p.description) for p in problems],
            reason="INPUT_INVALID",
        )
    return values


class ExecutionCommands(Generic[V]):
    """Each command answers the execution as ``presenter`` shows it (``V``); ``fingerprint``
    is what the request asks, without its key (a retry must ask the same)."""

    def __init__(
        self,
        uow: ExecutionUnitOfWork,
        catalog: DefinitionCatalog,
        wakeups: Wakeups,
        presenter: Presenter[V],
        admission: AdmissionLimit | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self._uow = uow
        self._presenter = presenter
        self._catalog = catalog
        self._wakeups = wakeups
        self._admission = admission
        self._max_depth = max_depth

    def _remembered(
        self, scope: str, key: str, fingerprint: str, *, look_up_first: bool = True
    ) -> Idempotency[ExecutionTransaction, V]:
        presenter = self._presenter
        return remembered_answer(
            scope,
            key,
            fingerprint,
            presenter.encode_execution,
            presenter.decode_execution,
            look_up_first=look_up_first,
        )

    async def _answered(self, scope: str, key: str, fingerprint: str) -> V | None:
        """The answer remembered for a retry of this request, if it is one."""
        cached = await self._uow.read(lambda tx: tx.idempotency.lookup(scope, key, fingerprint))
        return None if cached is None else self._presenter.decode_execution(cached)

    async def _admitted(self, command: Trigger) -> tuple[PublishedDefinition, dict[str, Any]]:
        """The definition to start and its checked input, once the trigger is admitted."""
        if self._admission is not None:  # RESOURCE_EXHAUSTED with RetryInfo at the bound
            await self._admission.admit()
        require("process_name", command.process_name)
        if command.parent is not None and command.parent.depth > self._max_depth:
            raise FailedPrecondition(
                f"a sub-process at depth {command.parent.depth} is deeper than the limit "
                f"of {self._max_depth} (TRINITY_EXECUTION_MAX_DEPTH)",
                reason=EXECUTION_DEPTH_EXCEEDED,
            )
        published = await self._catalog.by_name(command.process_name, command.version)
        return published, checked_input(published.process.spec, command)

    async def trigger(self, command: Trigger, fingerprint: str) -> V:
        now = datetime.now(UTC)
        execution_id = command.execution_id or str(uuid.uuid4())
        try:
            published, start_input = await self._admitted(command)
            decision = await decide_off_loop(
                published.process,
                None,
                d.StartExecution(
                    now=now,
                    execution_id=execution_id,
                    input=start_input,
                    triggered_by=command.triggered_by,
                    trigger_kind=command.trigger_kind,
                    parent=command.parent,
                ),
            )
        except TrinityError:
            # A retry is answered even when it would be refused now (the definition
            # archived meanwhile, the bound reached). Looked up only on a refusal: a
            # retry that would pass is answered by the write's own lookup, so a new
            # trigger costs no read transaction of its own.
            if command.request_id:
                cached = await self._answered(TRIGGER_SCOPE, command.request_id, fingerprint)
                if cached is not None:
                    return cached
            raise

        async def work(tx: ExecutionTransaction) -> V:
            state = decision.state
            row = ExecutionRow(
                id=execution_id,
                process_id=published.id,
                process_name=published.name,
                process_version=published.version,
                status=str(state.status),
                trigger_kind=str(command.trigger_kind),
                triggered_by=command.triggered_by,
                state=state.header_dict(),
                revision=1,
                fact_count=0,
                created_at=now,
                updated_at=now,
                ended_at=state.ended_at,
            )
            await tx.executions.insert(row, fact_count=len(decision.facts))
            written = await tx.write_decision(row, decision, now, new=True)
            self._wakeups.on_commit(tx, written, published.process.steps)
            return self._presenter.execution(
                published.process, state, process_name=published.name, created_at=now
            )

        # Grouped: triggers arriving while one is written share the next commit. A
        # trigger's key is nearly always new: no look-up first (a retry's write rolls
        # back and runs again with it; the write has no effect outside its transaction).
        execution = await self._uow.write(
            work,
            idempotency=self._remembered(
                TRIGGER_SCOPE, command.request_id, fingerprint, look_up_first=False
            ),
            grouped=True,
        )
        return execution

    async def start_child(self, data: dict[str, Any], fingerprint: str) -> V:
        """Start the child execution a sub_process step asked for (the payload of its
        start_child_execution dispatch). Idempotent by the parent step attempt's request
        key. The child runs as its parent's trigger principal."""
        published = await self._catalog.by_name(data["process"], data["version"])
        declared = {i.name: str(i.type) for i in published.process.spec.inputs}
        return await self.trigger(
            Trigger(
                request_id=data["parent"]["request"],
                process_name=data["process"],
                version=data["version"],
                input=child_input(declared, data["input"]),
                triggered_by=data["triggered_by"],
                trigger_kind=d.TriggerKind(data["trigger_kind"]),
                execution_id=data["execution_id"],
                parent=d.ParentLink.from_dict(data["parent"]),
            ),
            fingerprint,
        )

    async def cancel_child(
        self,
        parent_id: str,
        child_id: str,
        reason: str,
        request_id: str,
        fingerprint: str,
        *,
        compensate: bool = False,
    ) -> V:
        """Cancel a child because its parent step stopped (recorded as by the parent);
        with ``compensate`` (the parent compensates) it undoes its completed steps first."""
        control = Control(
            request_id, child_id, f"execution:{parent_id}", reason, compensate=compensate
        )
        return await self.cancel(control, fingerprint)

    async def cancel(self, command: Control, fingerprint: str) -> V:
        def precondition(state: d.ExecutionState) -> None:
            if state.status in (
                d.ExecutionStatus.COMPLETED,
                d.ExecutionStatus.CANCELLED,
                d.ExecutionStatus.COMPENSATION_FAILED,
            ):
                raise FailedPrecondition(
                    f"execution {state.execution_id} is {state.status}",
                    reason="EXECUTION_FINISHED",
                )
            if state.status is d.ExecutionStatus.COMPENSATING:
                raise FailedPrecondition(
                    f"execution {state.execution_id} is compensating; it ends by itself",
                    reason="EXECUTION_COMPENSATING",
                )

        return await self._control(
            "execution.CancelExecution",
            command,
            fingerprint,
            precondition,
            lambda now: d.CancelExecution(
                now=now, by=command.by, reason=command.reason, compensate=command.compensate
            ),
        )

    async def pause(self, command: Control, fingerprint: str) -> V:
        def precondition(state: d.ExecutionState) -> None:
            if state.status is not d.ExecutionStatus.RUNNING:
                raise FailedPrecondition(
                    f"execution {state.execution_id} is {state.status}, not running",
                    reason="EXECUTION_NOT_RUNNING",
                )

        return await self._control(
            "execution.PauseExecution",
            command,
            fingerprint,
            precondition,
            lambda now: d.PauseExecution(now=now, by=command.by, reason=command.reason),
        )

    async def resume(self, command: Control, fingerprint: str) -> V:
        def precondition(state: d.ExecutionState) -> None:
            if state.status is not d.ExecutionStatus.PAUSED:
                raise FailedPrecondition(
                    f"execution {state.execution_id} is {state.status}, not paused",
                    reason="EXECUTION_NOT_PAUSED",
                )

        return await self._control(
            "execution.ResumeExecution",
            command,
            fingerprint,
            precondition,
            lambda now: d.ResumeExecution(now=now, by=command.by),
        )

    async def retry(self, command: Control, fingerprint: str) -> V:
        def precondition(state: d.ExecutionState) -> None:
            if state.status is not d.ExecutionStatus.FAILED:
                raise FailedPrecondition(
                    f"execution {state.execution_id} is {state.status}, not failed",
                    reason="EXECUTION_NOT_FAILED",
                )
            if state.compensation is not None:
                raise FailedPrecondition(
                    f"execution {state.execution_id} was compensated: what it did is undone",
                    reason="EXECUTION_COMPENSATED",
                )
            if command.step_id:
                step = state.steps.get(command.step_id)
                if step is None or step.status is not d.StepStatus.FAILED:
                    now = "has not run" if step is None else f"is {step.status}"
                    raise FailedPrecondition(
                        f"step {command.step_id!r} has not failed (it {now}); only failed "
                        "steps can be retried",
                        reason="STEP_NOT_FAILED",
                    )

        return await self._control(
            "execution.RetryExecution",
            command,
            fingerprint,
            precondition,
            lambda now: d.RetryFailedSteps(now=now, step_id=command.step_id or None, by=command.by),
        )

    async def _control(
        self,
        scope: str,
        command: Control,
        fingerprint: str,
        precondition: Callable[[d.ExecutionState], None],
        event_for: Callable[[datetime], d.Event],
    ) -> V:
        """Decide ``event_for`` on the execution as loaded and write the decision, idempotent
        by the command's key: a retry is answered by the write's own look-up, or, when the
        execution has moved on so that it would be refused now, by a look-up then."""
        require("execution_id", command.execution_id)
        async for _ in decision_attempts():
            try:
                row, published, decision, now = await self._decided(
                    command, precondition, event_for
                )
            except TrinityError:
                if command.request_id:
                    cached = await self._answered(scope, command.request_id, fingerprint)
                    if cached is not None:
                        return cached
                raise
            view = self._presenter.execution(
                published.process,
                decision.state,
                process_name=row.process_name,
                created_at=row.created_at,
            )

            async def work(
                tx: ExecutionTransaction,
                row: ExecutionRow = row,
                decision: d.Decision = decision,
                now: datetime = now,
                view: V = view,
                steps: Mapping[str, Step] = published.process.steps,
            ) -> V:
                if decision.ignored:
                    await tx.executions.check_revision(row.id, row.revision)
                else:
                    written = await tx.write_decision(row, decision, now)
                    self._wakeups.on_commit(tx, written, steps)
                return view

            try:
                execution = await self._uow.write(
                    work, idempotency=self._remembered(scope, command.request_id, fingerprint)
                )
            except ConcurrentUpdate:
                continue
            return execution
        raise ConcurrentUpdate(f"execution {command.execution_id} kept changing; try again")

    async def _decided(
        self,
        command: Control,
        precondition: Callable[[d.ExecutionState], None],
        event_for: Callable[[datetime], d.Event],
    ) -> tuple[ExecutionRow, PublishedDefinition, d.Decision, datetime]:
        """The execution as loaded, its version and the decision on it; NOT_FOUND or the
        precondition's refusal."""
        row = await self._load(command.execution_id)
        if row is None:
            raise NotFound(
                f"execution {command.execution_id} not found", reason="EXECUTION_NOT_FOUND"
            )
        published = await self._catalog.by_id(row.process_id)
        if command.step_id and command.step_id not in published.process.steps:
            raise NotFound(
                f"process {published.name} {published.version} has no step {command.step_id!r}",
                reason="STEP_NOT_FOUND",
            )
        state = row.execution_state()
        precondition(state)
        now = datetime.now(UTC)
        return row, published, await decide_off_loop(published.process, state, event_for(now)), now

    async def _load(self, execution_id: str) -> ExecutionRow | None:
        return await self._uow.read(lambda tx: tx.executions.load(execution_id))
