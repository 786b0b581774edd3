"""ProcessExecution and StepExecution state: statuses, guarded transitions, compact form.

The state is *sparse*: a step appears in ``ExecutionState.steps`` only once something
happened to it, so the state of a 1,000-step process that has run three steps holds
three entries. Counters (``finished``) and indexes (``active``, ``ready``) are kept up
to date by the engine so no decision scans every step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from trinity_execution.domain.compensation_state import CompensationState
from trinity_execution.domain.errors import Failure, InvalidTransition
from trinity_execution.domain.items import ForEachState, money_in, money_out
from trinity_process_model.model import Money

HISTORY_LIMIT = 20
"""Previous iterations kept per step (older ones live only in the facts stream, and
``history_dropped`` counts them): per-execution state stays bounded (invariant 9)."""
HISTORY_OUTPUT_LIMIT = 2_000
"""Characters of a previous iteration's output kept in the history."""


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    """Failed or cancelled with compensation: completed steps are being undone."""
    COMPENSATION_FAILED = "compensation_failed"

    @property
    def is_ended(self) -> bool:
        """Completed, failed, cancelled or compensation failed (only a failed one can be
        redriven)."""
        return self in (
            ExecutionStatus.COMPLETED,
            ExecutionStatus.FAILED,
            ExecutionStatus.CANCELLED,
            ExecutionStatus.COMPENSATION_FAILED,
        )


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class TriggerKind(StrEnum):
    MANUAL = "manual"
    SCHEDULE = "schedule"
    EVENT = "event"


_E = ExecutionStatus
_S = StepStatus

EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    _E.PENDING: frozenset({_E.RUNNING, _E.FAILED, _E.CANCELLED}),
    _E.RUNNING: frozenset({_E.PAUSED, _E.COMPLETED, _E.FAILED, _E.CANCELLED, _E.COMPENSATING}),
    _E.PAUSED: frozenset({_E.RUNNING, _E.COMPLETED, _E.FAILED, _E.CANCELLED, _E.COMPENSATING}),
    # A failed execution can be redriven (RetryFailedSteps) or cancelled (compensating
    # first when it failed before anything compensated it).
    _E.FAILED: frozenset({_E.RUNNING, _E.CANCELLED, _E.COMPENSATING}),
    _E.COMPENSATING: frozenset({_E.FAILED, _E.CANCELLED, _E.COMPENSATION_FAILED}),
    _E.COMPLETED: frozenset(),
    _E.CANCELLED: frozenset(),
    _E.COMPENSATION_FAILED: frozenset(),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    _S.PENDING: frozenset({_S.READY, _S.RUNNING, _S.WAITING, _S.SKIPPED, _S.FAILED}),
    _S.READY: frozenset({_S.RUNNING, _S.WAITING, _S.FAILED, _S.PENDING, _S.SKIPPED}),
    _S.RUNNING: frozenset({_S.COMPLETED, _S.FAILED, _S.WAITING, _S.PENDING}),
    _S.WAITING: frozenset({_S.READY, _S.RUNNING, _S.WAITING, _S.COMPLETED, _S.FAILED, _S.PENDING}),
    # Back to pending only when a loop starts a new iteration.
    _S.COMPLETED: frozenset({_S.PENDING}),
    _S.SKIPPED: frozenset({_S.PENDING}),
    # A failed step is redriven (ready, running or waiting) or reset by a loop.
    _S.FAILED: frozenset({_S.PENDING, _S.READY, _S.RUNNING, _S.WAITING}),
}

FINISHED = frozenset({StepStatus.COMPLETED, StepStatus.SKIPPED})
"""Statuses that let dependents go on (plus FAILED with on_failure: continue)."""
ACTIVE = frozenset({StepStatus.RUNNING, StepStatus.WAITING})


@dataclass(slots=True)
class StepState:
    """One step in its current iteration (StepExecution)."""

    status: StepStatus = StepStatus.PENDING
    iteration: int = 1
    attempt: int = 0
    attempt_base: int = 0
    """Attempts made before the current retry series (a redrive starts a new series)."""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output: str | None = None
    structured: dict[str, Any] | None = None
    cost: Money | None = None
    decision: str = ""
    decided_by: str = ""
    comment: str = ""
    error: Failure | None = None
    skip_reason: str = ""
    next_attempt_time: datetime | None = None
    routes: tuple[str, ...] = ()
    """For gateways: the targets chosen in this iteration."""
    continued: bool = False
    """Failed, but the definition says on_failure: continue."""
    request: str = ""
    """Key of the outstanding work or approval request."""
    timer: str = ""
    """Id of the outstanding step timer or retry backoff timer."""
    timeout_timer: str = ""
    awaited_key: str = ""
    """For a waiting wait_for_message step: its rendered correlation key."""
    child: str = ""
    """For a sub_process step: the child execution of its latest attempt."""
    for_each: ForEachState | None = None
    """For a for_each step: its items and how far they went (latest attempt)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    history_dropped: int = 0
    """Earlier iterations no longer in ``history``."""

    def move(self, to: StepStatus) -> None:
        """Change status, refusing what the lifecycle does not allow."""
        if to not in STEP_TRANSITIONS[self.status]:
            raise InvalidTransition(f"step cannot go from {self.status} to {to}")
        self.status = to

    @property
    def is_finished(self) -> bool:
        """Completed, skipped, or failed with on_failure: continue."""
        return self.status in FINISHED or (self.status is StepStatus.FAILED and self.continued)

    @property
    def lets_dependents_run(self) -> bool:
        """Completed, or failed and continued: a join counts it as done."""
        return self.status is StepStatus.COMPLETED or (
            self.status is StepStatus.FAILED and self.continued
        )

    def clone(self) -> StepState:
        clone = _new_step()
        for name in _STEP_FIELDS:
            setattr(clone, name, getattr(self, name))
        clone.history = list(self.history)
        if self.for_each is not None:
            clone.for_each = self.for_each.clone()
        return clone

    def summary(self) -> dict[str, Any]:
        """What the history keeps of this iteration."""
        data: dict[str, Any] = {"iteration": self.iteration, "status": str(self.status)}
        if self.attempt:
            data["attempt"] = self.attempt
        for name in ("started_at", "ended_at"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value.isoformat()
        if self.output is not None:
            data["output"] = self.output[:HISTORY_OUTPUT_LIMIT]
            if len(self.output) > HISTORY_OUTPUT_LIMIT:
                data["output_truncated"] = True
        if self.decision:
            data["decision"] = self.decision
        if self.comment:
            data["comment"] = self.comment[:HISTORY_OUTPUT_LIMIT]
        if self.cost is not None:
            data["cost"] = _money_out(self.cost)
        if self.error is not None:
            data["error"] = self.error.to_dict()
        if self.skip_reason:
            data["skip_reason"] = self.skip_reason
        return data

    def reset_for_iteration(self) -> None:
        """Start the next iteration: keep a bounded summary, clear the rest."""
        if self.status is not StepStatus.PENDING:
            self.history.append(self.summary())
            dropped = max(0, len(self.history) - HISTORY_LIMIT)
            del self.history[:dropped]
            self.history_dropped += dropped
        history = self.history
        iteration = self.iteration + 1
        fresh = StepState(
            iteration=iteration, history=history, history_dropped=self.history_dropped
        )
        for name in _STEP_FIELDS:
            setattr(self, name, getattr(fresh, name))

    # ------------------------------------------------------------ compact form

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": str(self.status)}
        if self.iteration != 1:
            data["iteration"] = self.iteration
        for name in ("attempt", "attempt_base"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        for name in ("started_at", "ended_at", "next_attempt_time"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value.isoformat()
        if self.output is not None:
            data["output"] = self.output
        if self.structured is not None:
            data["structured"] = self.structured
        if self.cost is not None:
            data["cost"] = _money_out(self.cost)
        for name in ("decision", "decided_by", "comment", "skip_reason", "request", "timer"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.timeout_timer:
            data["timeout_timer"] = self.timeout_timer
        if self.awaited_key:
            data["awaited_key"] = self.awaited_key
        if self.child:
            data["child"] = self.child
        if self.for_each is not None:
            data["for_each"] = self.for_each.to_dict()
        if self.error is not None:
            data["error"] = self.error.to_dict()
        if self.routes:
            data["routes"] = list(self.routes)
        if self.continued:
            data["continued"] = True
        if self.history:
            data["history"] = self.history
        if self.history_dropped:
            data["history_dropped"] = self.history_dropped
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepState:
        return cls(
            status=StepStatus(data["status"]),
            iteration=int(data.get("iteration", 1)),
            attempt=int(data.get("attempt", 0)),
            attempt_base=int(data.get("attempt_base", 0)),
            started_at=_time_in(data.get("started_at")),
            ended_at=_time_in(data.get("ended_at")),
            output=data.get("output"),
            structured=data.get("structured"),
            cost=_money_in(data.get("cost")),
            decision=data.get("decision", ""),
            decided_by=data.get("decided_by", ""),
            comment=data.get("comment", ""),
            error=Failure.from_dict(data["error"]) if data.get("error") else None,
            skip_reason=data.get("skip_reason", ""),
            next_attempt_time=_time_in(data.get("next_attempt_time")),
            routes=tuple(data.get("routes", ())),
            continued=bool(data.get("continued", False)),
            request=data.get("request", ""),
            timer=data.get("timer", ""),
            timeout_timer=data.get("timeout_timer", ""),
            awaited_key=data.get("awaited_key", ""),
            child=data.get("child", ""),
            for_each=(
                ForEachState.from_dict(data["for_each"], data.get("request", ""))
                if data.get("for_each")
                else None
            ),
            history=list(data.get("history", ())),
            history_dropped=int(data.get("history_dropped", 0)),
        )


_PRISTINE = StepState()
_STEP_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(StepState))


def _new_step() -> StepState:
    return object.__new__(StepState)


StoredStep = StepState | dict[str, Any] | str
"""A step as a store may hand it over: decoded, its compact form, or that form as JSON."""


class StepStates(MutableMapping[str, StepState]):
    """Step id → state. A step handed over in its compact form (``StepState.to_dict()``,
    or that dict as JSON text) is decoded when first read, so a decision pays for the
    steps it reads, not for every step the execution has run."""

    __slots__ = ("_steps",)

    def __init__(self, steps: Mapping[str, StoredStep] | None = None) -> None:
        self._steps: dict[str, StoredStep] = dict(steps) if steps else {}

    def __getitem__(self, step_id: str) -> StepState:
        found = self._steps[step_id]
        if type(found) is StepState:
            return found
        return self._decode(step_id, found)

    def get(self, step_id: str, default: Any = None) -> Any:
        found = self._steps.get(step_id)
        if found is None:
            return default
        if type(found) is StepState:
            return found
        return self._decode(step_id, found)

    def _decode(self, step_id: str, found: StoredStep) -> StepState:
        data = json.loads(found) if isinstance(found, str) else found
        decoded = StepState.from_dict(data)  # type: ignore[arg-type]
        self._steps[step_id] = decoded
        return decoded

    def __setitem__(self, step_id: str, st: StepState) -> None:
        self._steps[step_id] = st

    def __delitem__(self, step_id: str) -> None:
        del self._steps[step_id]

    def __contains__(self, step_id: object) -> bool:
        return step_id in self._steps

    def __iter__(self) -> Iterator[str]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"StepStates({dict(self.items())!r})"

    def copy(self) -> StepStates:
        """A copy to change apart (the steps themselves are shared: copy on write)."""
        copy = StepStates()
        copy._steps = dict(self._steps)
        return copy


@dataclass(frozen=True)
class ParentLink:
    """Where a child execution came from: the parent's sub_process step attempt."""

    execution_id: str
    step_id: str
    request: str
    """The parent step attempt's request key (the child's end answers it)."""
    depth: int = 1
    """How deep in sub-processes the child runs (a child of a top-level execution: 1)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "step_id": self.step_id,
            "request": self.request,
            "depth": self.depth,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParentLink:
        return cls(
            str(data["execution_id"]),
            str(data["step_id"]),
            str(data["request"]),
            int(data.get("depth", 1)),
        )


@dataclass(slots=True)
class ExecutionState:
    """One run of a definition version (ProcessExecution)."""

    execution_id: str
    definition_id: str
    version: str
    status: ExecutionStatus = ExecutionStatus.PENDING
    input: dict[str, Any] = field(default_factory=dict)
    triggered_by: str = ""
    trigger_kind: TriggerKind = TriggerKind.MANUAL
    started_at: datetime | None = None
    ended_at: datetime | None = None
    total_cost: Money | None = None
    budget_warned: bool = False
    budget_exceeded: bool = False
    steps: StepStates = field(default_factory=StepStates)
    """Only the steps something happened to (sparse), decoded as read."""
    finished: int = 0
    """How many steps are finished (completed, skipped, or failed and continued)."""
    active: dict[str, None] = field(default_factory=dict)
    """Steps running or waiting, in the order they started (an ordered set)."""
    ready: list[str] = field(default_factory=list)
    """Steps ready to start but held while the execution is paused."""
    unsettled: list[str] = field(default_factory=list)
    """Steps whose readiness was still to be assessed when the execution stopped
    (failed); a redrive assesses them first."""
    loop_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(gateway, target) → how often that loop route was taken."""
    error: Failure | None = None
    failed_step_id: str = ""
    cancelled_by: str = ""
    cancel_reason: str = ""
    paused_by: str = ""
    pause_reason: str = ""
    parent: ParentLink | None = None
    """For a child execution: the sub_process step attempt that started it."""
    completions: list[tuple[str, int]] = field(default_factory=list)
    """(step id, iteration) of each completion of a step that declares ``compensate``,
    in order: what a compensation undoes, latest first. Never changed in place (a
    decision replaces the list), so a clone shares it."""
    compensation: CompensationState | None = None
    """Once the execution compensates (or did)."""

    def step(self, step_id: str) -> StepState:
        """The step's state (a pristine pending one, not stored, when nothing happened yet)."""
        return self.steps.get(step_id, _PRISTINE)

    def move(self, to: ExecutionStatus) -> None:
        if to not in EXECUTION_TRANSITIONS[self.status]:
            raise InvalidTransition(f"execution cannot go from {self.status} to {to}")
        self.status = to

    def progress(self, total: int) -> tuple[int, int]:
        """(finished, total) steps. Once the execution has ended every step is done
        (the steps it could not run were skipped), failed ones included."""
        done = self.finished
        if self.status.is_ended:
            done += sum(
                1
                for st in self.steps.values()
                if st.status is StepStatus.FAILED and not st.continued
            )
        return min(done, total), total

    @property
    def current_step_ids(self) -> list[str]:
        return list(self.active)

    def clone(self) -> ExecutionState:
        """A copy whose containers can change without touching this one (steps copy on write)."""
        clone = _new_execution()
        for name in _EXECUTION_FIELDS:
            setattr(clone, name, getattr(self, name))
        clone.steps = self.steps.copy()
        clone.active = dict(self.active)
        clone.ready = list(self.ready)
        clone.unsettled = list(self.unsettled)
        clone.loop_counts = dict(self.loop_counts)
        return clone

    # ------------------------------------------------------------ compact form

    def to_dict(self) -> dict[str, Any]:
        """Compact, JSON-serialisable form (Decimal as str, times ISO 8601)."""
        data = self.header_dict()
        data["steps"] = {sid: st.to_dict() for sid, st in self.steps.items()}
        return data

    def header_dict(self) -> dict[str, Any]:
        """The compact form without the steps: a store can keep each step apart and
        rewrite only ``Decision.changed_steps`` (see ``from_parts``)."""
        data: dict[str, Any] = {
            "execution_id": self.execution_id,
            "definition_id": self.definition_id,
            "version": self.version,
            "status": str(self.status),
            "input": self.input,
            "triggered_by": self.triggered_by,
            "trigger_kind": str(self.trigger_kind),
            "finished": self.finished,
        }
        for name in ("started_at", "ended_at"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value.isoformat()
        if self.total_cost is not None:
            data["total_cost"] = _money_out(self.total_cost)
        for name in ("budget_warned", "budget_exceeded"):
            if getattr(self, name):
                data[name] = True
        if self.active:
            data["active"] = list(self.active)
        if self.ready:
            data["ready"] = list(self.ready)
        if self.unsettled:
            data["unsettled"] = list(self.unsettled)
        if self.loop_counts:
            data["loop_counts"] = [[g, t, n] for (g, t), n in self.loop_counts.items()]
        if self.error is not None:
            data["error"] = self.error.to_dict()
        for name in (
            "failed_step_id",
            "cancelled_by",
            "cancel_reason",
            "paused_by",
            "pause_reason",
        ):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.parent is not None:
            data["parent"] = self.parent.to_dict()
        if self.completions:
            data["completions"] = [[sid, iteration] for sid, iteration in self.completions]
        if self.compensation is not None:
            data["compensation"] = self.compensation.to_dict()
        return data

    @classmethod
    def from_parts(cls, header: dict[str, Any], steps: Mapping[str, StoredStep]) -> ExecutionState:
        """The state from ``header_dict()`` and the steps kept apart (each its
        ``to_dict()``, or that as JSON text): a step is decoded when first read. (A
        header with steps is the whole compact form: its steps are the state's.)"""
        state = cls.from_dict(header)
        if "steps" not in header:
            state.steps = StepStates(steps)
        return state

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionState:
        return cls(
            execution_id=data["execution_id"],
            definition_id=data.get("definition_id", ""),
            version=data.get("version", ""),
            status=ExecutionStatus(data["status"]),
            input=dict(data.get("input", {})),
            triggered_by=data.get("triggered_by", ""),
            trigger_kind=TriggerKind(data.get("trigger_kind", "manual")),
            started_at=_time_in(data.get("started_at")),
            ended_at=_time_in(data.get("ended_at")),
            total_cost=_money_in(data.get("total_cost")),
            budget_warned=bool(data.get("budget_warned", False)),
            budget_exceeded=bool(data.get("budget_exceeded", False)),
            steps=StepStates(
                {sid: StepState.from_dict(st) for sid, st in data.get("steps", {}).items()}
            ),
            finished=int(data.get("finished", 0)),
            active=dict.fromkeys(data.get("active", ())),
            ready=list(data.get("ready", ())),
            unsettled=list(data.get("unsettled", ())),
            loop_counts={(g, t): int(n) for g, t, n in data.get("loop_counts", ())},
            error=Failure.from_dict(data["error"]) if data.get("error") else None,
            failed_step_id=data.get("failed_step_id", ""),
            cancelled_by=data.get("cancelled_by", ""),
            cancel_reason=data.get("cancel_reason", ""),
            paused_by=data.get("paused_by", ""),
            pause_reason=data.get("pause_reason", ""),
            parent=ParentLink.from_dict(data["parent"]) if data.get("parent") else None,
            completions=[(str(s), int(i)) for s, i in data.get("completions", ())],
            compensation=(
                CompensationState.from_dict(data["compensation"])
                if data.get("compensation")
                else None
            ),
        )


_EXECUTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ExecutionState))


def _new_execution() -> ExecutionState:
    return object.__new__(ExecutionState)


_money_out = money_out
_money_in = money_in


def _time_in(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
