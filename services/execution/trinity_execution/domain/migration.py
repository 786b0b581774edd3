"""Moving a running execution onto another version of its process (pure).

    mapping = step_mapping(source, target, explicit)          # old id → new id
    problems = migration_problems(source, target, state, mapping)
    decision = decide(source, state, MigrateExecution(now=…, target=target, mapping=mapping))

Step states travel by the mapping (equal ids unless given explicitly); steps of the
old version without a counterpart are left behind, new steps start pending. The move
changes nothing outside the execution: work, approvals, timers and message
subscriptions that are outstanding stay as they are, and their request keys (which
name execution, step, iteration and attempt) answer the same step afterwards. So an
execution can move only when

* every active (running, waiting) or ready step has a counterpart,
  (``STEP_HAS_NO_COUNTERPART``), with the same id (``ACTIVE_STEP_RENAMED``: its keys
  name that id) and, when it is active, the same kind (``STEP_KIND_CHANGED``);
* every step that has run comes, in the new version, only after steps that have
  finished (``STEP_ORDER_CHANGED``);
* no step of the new version would wait for ever: a pending step all of whose
  dependencies have already finished is never started by anything (the engine starts
  a step when one of its dependencies finishes), and neither is a join waiting for it
  (``STEP_NEVER_RUNS``). Steps added *after* active ones are fine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trinity_execution.domain.events import MigrateExecution
from trinity_execution.domain.facts import ExecutionMigrated
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.domain.run import Run
from trinity_execution.domain.state import (
    ExecutionState,
    ExecutionStatus,
    StepStates,
    StepStatus,
)

EXECUTION_ENDED = "EXECUTION_ENDED"
STEP_HAS_NO_COUNTERPART = "STEP_HAS_NO_COUNTERPART"
ACTIVE_STEP_RENAMED = "ACTIVE_STEP_RENAMED"
STEP_KIND_CHANGED = "STEP_KIND_CHANGED"
STEP_ORDER_CHANGED = "STEP_ORDER_CHANGED"
STEP_NEVER_RUNS = "STEP_NEVER_RUNS"


@dataclass(frozen=True)
class MigrationProblem:
    """Why an execution cannot move: a stable code, the step concerned, an explanation."""

    code: str
    step_id: str
    message: str


def mapping_violations(
    source: CompiledProcess, target: CompiledProcess, explicit: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(old step id, what is wrong) for each entry of an explicit mapping that cannot hold."""
    wrong: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for old, new in explicit.items():
        if old not in source.steps:
            wrong.append((old, f"version {source.version} has no step {old!r}"))
        elif new not in target.steps:
            wrong.append((old, f"version {target.version} has no step {new!r}"))
        elif new in seen:
            wrong.append((old, f"{seen[new]!r} is mapped to {new!r} already"))
        else:
            seen[new] = old
    return wrong


def step_mapping(
    source: CompiledProcess, target: CompiledProcess, explicit: Mapping[str, str]
) -> dict[str, str]:
    """Old id → new id: the explicit entries, then equal ids (for targets not taken)."""
    taken = set(explicit.values())
    mapping = {
        sid: sid
        for sid in source.steps
        if sid in target.steps and sid not in taken and sid not in explicit
    }
    mapping.update(explicit)
    return mapping


def migrated_state(
    target: CompiledProcess, state: ExecutionState, mapping: Mapping[str, str]
) -> ExecutionState:
    """The state as the target version sees it (no check: see ``migration_problems``)."""
    moved = state.clone()
    moved.definition_id = target.definition_id
    moved.version = target.version
    steps = StepStates()
    for old, st in state.steps.items():
        new = mapping.get(old)
        if new is None:
            continue
        copy = st.clone()
        copy.routes = tuple(mapping[r] for r in st.routes if r in mapping)
        steps[new] = copy
    moved.steps = steps
    moved.active = {mapping[s]: None for s in state.active if s in mapping}
    moved.ready = [mapping[s] for s in state.ready if s in mapping]
    moved.unsettled = [mapping[s] for s in state.unsettled if s in mapping]
    moved.loop_counts = {
        (mapping[g], mapping[t]): n
        for (g, t), n in state.loop_counts.items()
        if g in mapping and t in mapping and (mapping[g], mapping[t]) in target.graph.loop_routes
    }
    moved.finished = sum(1 for st in steps.values() if st.is_finished)
    # What a later compensation undoes follows the steps (unmapped ones are left behind).
    moved.completions = [(mapping[s], i) for s, i in state.completions if s in mapping]
    return moved


def migration_problems(
    source: CompiledProcess,
    target: CompiledProcess,
    state: ExecutionState,
    mapping: Mapping[str, str],
) -> list[MigrationProblem]:
    """Every reason the execution cannot move (empty: it can)."""
    if state.status not in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED):
        return [
            MigrationProblem(
                EXECUTION_ENDED,
                "",
                f"the execution is {state.status}; only running or paused executions move",
            )
        ]
    problems = _carried_steps(source, target, state, mapping)
    if problems:
        return problems
    return _order(target, migrated_state(target, state, mapping))


def _carried_steps(
    source: CompiledProcess,
    target: CompiledProcess,
    state: ExecutionState,
    mapping: Mapping[str, str],
) -> list[MigrationProblem]:
    problems = []
    for sid in [*state.active, *state.ready]:
        new = mapping.get(sid)
        doing = (
            "waits for a retry"
            if state.step(sid).timer and sid in state.active
            else (str(state.step(sid).status))
        )
        if new is None:
            problems.append(
                MigrationProblem(
                    STEP_HAS_NO_COUNTERPART,
                    sid,
                    f"step {sid!r} is {doing} and version {target.version} has no step for it",
                )
            )
        elif new != sid:
            problems.append(
                MigrationProblem(
                    ACTIVE_STEP_RENAMED,
                    sid,
                    f"step {sid!r} is {doing}: its outstanding requests name it, so it "
                    f"cannot become {new!r}",
                )
            )
        elif sid in state.active and target.step(new).kind is not source.step(sid).kind:
            problems.append(
                MigrationProblem(
                    STEP_KIND_CHANGED,
                    sid,
                    f"step {sid!r} is {doing} as a {source.step(sid).kind}, but is a "
                    f"{target.step(new).kind} in version {target.version}",
                )
            )
    return problems


def _order(target: CompiledProcess, moved: ExecutionState) -> list[MigrationProblem]:
    graph = target.graph
    problems = []
    for sid in graph.topological_order:
        st = moved.step(sid)
        deps = graph.dependencies(sid)
        unfinished = [d for d in deps if not moved.step(d).is_finished]
        if st.status is not StepStatus.PENDING:
            if unfinished:
                problems.append(
                    MigrationProblem(
                        STEP_ORDER_CHANGED,
                        sid,
                        f"step {sid!r} is {st.status}, but in version {target.version} it "
                        f"comes after {', '.join(map(repr, unfinished))}, which "
                        f"{'has' if len(unfinished) == 1 else 'have'} not finished",
                    )
                )
            continue
        if not unfinished:
            waiting = list(graph.dependents(sid))
            after = f"; {', '.join(map(repr, waiting))} would wait for it" if waiting else ""
            problems.append(
                MigrationProblem(
                    STEP_NEVER_RUNS,
                    sid,
                    f"step {sid!r} of version {target.version} would never run: everything "
                    f"it follows has already finished{after}",
                )
            )
    return problems


def on_migrate(source: CompiledProcess, state: ExecutionState, event: MigrateExecution) -> Run:
    """The move as one decision (the caller checked ``migration_problems`` first)."""
    target = event.target
    moved = migrated_state(target, state, event.mapping)
    run = Run(target, moved, event.now)
    for sid in moved.steps:
        run.edit(sid)  # every step is rewritten under the new version
    run.facts.append(
        ExecutionMigrated(
            execution=run.ref,
            from_process_id=source.definition_id,
            from_version=source.version,
            step_mapping={old: new for old, new in event.mapping.items() if old in state.steps},
            migrated_by=event.by,
            occur_time=event.now,
        )
    )
    return run
