"""Property tests: random valid definitions, random orders of outcomes and interventions.

Checked on every decision: no exception; the state round-trips through its compact
form; its counters and indexes agree with its steps; a running, waiting or completed
step has all its dependencies finished; a duplicated event changes nothing. Checked
per run: it terminates (never stuck with nothing outstanding), each step attempt starts
once and each step completes at most once per iteration, and replaying the same
events gives the same state, commands and facts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from engine_support import T0
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinity_execution.domain import (
    ApprovalDecided,
    CancelApproval,
    CancelChildExecution,
    CancelExecution,
    CancelTimer,
    CancelWork,
    ChildExecutionEnded,
    CloseMessageSubscription,
    CommandRejected,
    CompiledProcess,
    Event,
    ExecutionState,
    ExecutionStatus,
    MessageReceived,
    MigrateExecution,
    NotifyParent,
    OpenMessageSubscription,
    ParentLink,
    PauseExecution,
    RequestApproval,
    RequestWork,
    ResumeExecution,
    RetryFailedSteps,
    StartChildExecution,
    StartExecution,
    StartTimer,
    StepCompleted,
    StepSkipped,
    StepStarted,
    StepState,
    StepStatus,
    TimerFired,
    WorkCompleted,
    WorkFailed,
    decide,
    migration_problems,
    step_mapping,
)
from trinity_process_model.model import (
    AgentTaskConfig,
    Budget,
    BudgetAction,
    Channel,
    Compensation,
    FailureAction,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    MessageTimeoutAction,
    Money,
    NotificationConfig,
    ProcessSpec,
    RetryPolicy,
    Route,
    Step,
    SubProcessConfig,
    TimerConfig,
    WaitForMessageConfig,
)

FLAGS = ("f0", "f1", "f2")
KINDS = (
    "agent",
    "agent",
    "approval",
    "timer",
    "notification",
    "message",
    "child",
    "map",
    "agent_map",
    "gateway",
    "gateway",
)


@st.composite
def definitions(draw: st.DrawFn) -> ProcessSpec:
    """A random valid definition: a DAG in definition order, forward routes, loop routes
    back to ancestors with max_iterations, conditions that compile and read known names."""
    n = draw(st.integers(1, 8))
    deps: list[tuple[int, ...]] = []
    for i in range(n):
        picked = draw(st.sets(st.integers(0, i - 1), max_size=2)) if i else set()
        deps.append(tuple(sorted(picked)))
    ancestors: list[set[int]] = []
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(n)]
    routes_of: dict[int, list[Route]] = {}
    for i in range(n):
        if kinds[i] != "gateway" or i == n - 1:
            continue
        targets = draw(st.sets(st.integers(i + 1, n - 1), min_size=1, max_size=3))
        routes_of[i] = [
            Route(f"s{t}", draw(st.sampled_from(["", *(f"{{{{ input.{f} }}}}" for f in FLAGS)])))
            for t in sorted(targets)
        ]
        if draw(st.booleans()):
            routes_of[i][-1] = Route(routes_of[i][-1].target, is_default=True)
    for i in range(n):
        kinds[i] = "agent" if kinds[i] == "gateway" and i not in routes_of else kinds[i]
    # ancestors through depends_on and forward routes
    parents: dict[int, set[int]] = {i: set(deps[i]) for i in range(n)}
    for g, routes in routes_of.items():
        for route in routes:
            parents[int(route.target[1:])].add(g)
    for i in range(n):
        ancestors.append(
            set().union(*(ancestors[p] | {p} for p in parents[i])) if parents[i] else set()
        )
    for g in routes_of:
        if ancestors[g] and draw(st.booleans()):
            back = draw(st.sampled_from(sorted(ancestors[g])))
            condition = draw(
                st.sampled_from(["", "{{ input.f0 }}", f"{{{{ steps.s{back}.iteration < 3 }}}}"])
            )
            routes_of[g].insert(
                0, Route(f"s{back}", condition, max_iterations=draw(st.integers(1, 3)))
            )
    steps = []
    for i in range(n):
        kw: dict[str, Any] = {"depends_on": tuple(f"s{d}" for d in deps[i])}
        if draw(st.integers(0, 5)) == 0:
            kw["condition"] = draw(st.sampled_from(["{{ input.f1 }}", "{{ not input.f2 }}"]))
        if draw(st.integers(0, 3)) == 0:
            kw["retry"] = RetryPolicy(max_attempts=draw(st.integers(2, 3)))
        if draw(st.integers(0, 4)) == 0:
            kw["on_failure"] = FailureAction.CONTINUE
        if (
            kinds[i] in ("agent", "message", "child", "map", "agent_map")
            and draw(st.integers(0, 4)) == 0
        ):
            kw["timeout"] = timedelta(minutes=5)
        if draw(st.integers(0, 6)) == 0:
            kw["informed"] = ("ops@example.com",)
        if kinds[i] in ("agent", "notification", "child", "map") and draw(st.booleans()):
            retry = RetryPolicy(max_attempts=2) if draw(st.booleans()) else None
            kw["compensate"] = Compensation(
                AgentTaskConfig("undoer", "undo {{ step.output }} of {{ step.iteration }}"), retry
            )
        steps.append(Step(f"s{i}", _config(kinds[i], routes_of.get(i), draw), **kw))
    budget = None
    if draw(st.integers(0, 3)) == 0:
        action = draw(st.sampled_from([BudgetAction.FAIL, BudgetAction.PAUSE]))
        budget = Budget(Money(Decimal(draw(st.integers(1, 6))), "USD"), action)
    return ProcessSpec(name="random", steps=tuple(steps), budget=budget)


def _config(kind: str, routes: list[Route] | None, draw: st.DrawFn) -> Any:
    if kind == "approval":
        return HumanApprovalConfig(approvers=("a@example.com",), title="t {{ input.f0 }}")
    if kind == "timer":
        return TimerConfig(duration=timedelta(minutes=draw(st.integers(1, 60))))
    if kind == "notification":
        return NotificationConfig(Channel.EMAIL, "x@example.com", "hi {{ process.name }}")
    if kind == "message":
        return WaitForMessageConfig(
            "ci-result",
            "pr-{{ input.f0 }}",
            on_timeout=draw(st.sampled_from(list(MessageTimeoutAction))),
        )
    if kind == "child":
        return SubProcessConfig("child", input={"topic": "{{ input.f0 }}"})
    if kind == "map":
        return SubProcessConfig(
            "child",
            input={"x": "{{ item }} of {{ input.f0 }}"},
            for_each=draw(st.sampled_from(["{{ [1, 2, 3] }}", "{{ [] }}", "{{ [7] }}"])),
            max_concurrency=2,
            tolerated_failures=draw(st.integers(0, 1)),
        )
    if kind == "agent_map":
        return AgentTaskConfig(
            "agent",
            "do {{ item }} of {{ input.f0 }}",
            for_each=draw(st.sampled_from(["{{ [1, 2, 3] }}", "{{ [] }}", "{{ [7] }}"])),
            max_concurrency=2,
            tolerated_failures=draw(st.integers(0, 1)),
        )
    if kind == "gateway":
        assert routes is not None
        return GatewayConfig(draw(st.sampled_from(list(GatewayType))), tuple(routes))
    return AgentTaskConfig("agent", "do {{ input.f0 }}")


# --------------------------------------------------------------------------- world


@dataclass
class World:
    process: CompiledProcess
    state: ExecutionState | None = None
    clock: Any = T0
    outstanding: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    starts: list[tuple[str, int, int]] = field(default_factory=list)
    completions: list[tuple[str, int]] = field(default_factory=list)
    skips: list[tuple[str, int, str]] = field(default_factory=list)
    subscriptions: set[str] = field(default_factory=set)
    """Message subscriptions open (not closed by a decision nor taken by a delivery)."""
    children: dict[str, str] = field(default_factory=dict)
    """Child executions started (request key → child id); never two for one key."""
    told_parent: list[NotifyParent] = field(default_factory=list)
    facts: list[Any] = field(default_factory=list)
    stored: dict[str, str] = field(default_factory=dict)
    """Each step's compact form as JSON, as a store rewriting only changed steps keeps it."""
    kept: dict[str, StepState | str] = field(default_factory=dict)
    """What the next decision is given: ``stored`` (decoded as read), for_each steps whole."""

    def send(self, event: Event) -> None:
        before = None if self.state is None else self.state.to_dict()
        decision = decide(self.process, self.state, event)
        if self.state is not None:
            assert self.state.to_dict() == before, "decide changed the state it was given"
        if before is not None:
            after = decision.state.to_dict()["steps"]
            changed = {sid for sid in after if after[sid] != before["steps"].get(sid)}
            assert changed <= set(decision.changed_steps), "a change was not reported"
            assert set(before["steps"]) - set(after) == set(decision.dropped_steps)
        # What a store keeping each step apart holds: only changed steps rewritten.
        for sid in decision.changed_steps:
            changed_step = decision.state.steps[sid]
            self.stored[sid] = json.dumps(changed_step.to_dict())
            # (a for_each step's items live in a table of their own: kept whole here)
            self.kept[sid] = changed_step if changed_step.for_each else self.stored[sid]
        for sid in decision.dropped_steps:
            del self.stored[sid], self.kept[sid]
        loaded = ExecutionState.from_parts(decision.state.header_dict(), self.stored)
        assert loaded.to_dict() == decision.state.to_dict(), "the stored steps differ"
        self.events.append(event)
        self.state = decision.state
        self.outputs.append((repr(decision.commands), repr(decision.facts)))
        for command in decision.commands:
            if (isinstance(command, RequestWork) and command.correlation is not None) or isinstance(
                command, RequestApproval
            ):
                self.outstanding[command.key] = command
            elif isinstance(command, StartTimer):
                self.outstanding[command.timer_id] = command
            elif isinstance(command, StartChildExecution):
                assert command.key not in self.children, "a child started twice"
                self.children[command.key] = command.child_execution_id
                self.outstanding[command.key] = command
            elif isinstance(command, CancelChildExecution):
                assert command.key in self.children, "cancelled a child never started"
                self.outstanding.pop(command.key, None)
            elif isinstance(command, NotifyParent):
                self.told_parent.append(command)
            elif isinstance(command, OpenMessageSubscription):
                assert command.key not in self.subscriptions, "a subscription opened twice"
                self.outstanding[command.key] = command
                self.subscriptions.add(command.key)
            elif isinstance(command, CloseMessageSubscription):
                self.outstanding.pop(command.key, None)
                self.subscriptions.discard(command.key)
            elif isinstance(command, CancelWork | CancelApproval):
                self.outstanding.pop(command.key, None)
            elif isinstance(command, CancelTimer):
                self.outstanding.pop(command.timer_id, None)
        if isinstance(event, MessageReceived):
            # The delivery took the subscription (the store deletes it with the decision).
            self.subscriptions.discard(f"ex/{event.step_id}/{event.iteration}/{event.attempt}")
        self.facts.extend(decision.facts)
        for fact in decision.facts:
            if isinstance(fact, StepStarted):
                self.starts.append((fact.step_id, fact.iteration, fact.attempt))
            elif isinstance(fact, StepCompleted):
                self.completions.append((fact.step_id, fact.iteration))
            elif isinstance(fact, StepSkipped):
                self.skips.append((fact.step_id, fact.iteration, fact.reason))
        if isinstance(event, MigrateExecution) and not decision.ignored:
            self.process = event.target
        check_state(self.process, self.state)
        if decision.ignored:
            assert not decision.facts and not decision.commands
            assert decision.state is self.state
        else:
            # The next decision is made on the state as loaded (each step decoded as read).
            self.state = ExecutionState.from_parts(decision.state.header_dict(), self.kept)

    def duplicate_last(self) -> None:
        event = self.events[-1]
        if isinstance(event, RetryFailedSteps):
            return
        assert self.state is not None
        before = self.state.to_dict()
        decision = decide(self.process, self.state, event)
        assert decision.ignored, f"duplicate {type(event).__name__} was applied"
        assert decision.state.to_dict() == before


def check_state(process: CompiledProcess, state: ExecutionState) -> None:
    data = state.to_dict()
    json.dumps(data)
    assert ExecutionState.from_dict(data).to_dict() == data
    graph = process.graph
    finished = sum(1 for s in state.steps.values() if s.is_finished)
    assert state.finished == finished
    active = {
        sid
        for sid, s in state.steps.items()
        if s.status in (StepStatus.RUNNING, StepStatus.WAITING)
    }
    assert set(state.active) == active
    for s in state.steps.values():
        each = s.for_each
        if each is not None:  # every item is pending, running or ended: never two of these
            assert all(i < each.next for i in each.running)
            ended = {index for index, _, _ in each.results}
            assert not set(each.running) & ended and len(ended) == each.ended
            if s.request:  # an attempt going on: each item started is running or ended
                assert each.ended + len(each.running) == each.next
            assert sum(failed for _, _, failed in each.results) == each.failed
            assert len(each.running) <= 2
            if s.status is StepStatus.COMPLETED:
                assert not each.running and each.ended == each.total
    for sid, s in state.steps.items():
        if s.status in (
            StepStatus.RUNNING,
            StepStatus.WAITING,
            StepStatus.COMPLETED,
            StepStatus.READY,
        ):
            for dep in graph.dependencies(sid):
                assert state.step(dep).is_finished, f"{sid} {s.status} before {dep} finished"


def check_ended(world: World) -> None:
    """An ended execution leaves no step that could still run: each ended skipped with a
    reason and a fact, and its progress reaches its total."""
    state = world.state
    assert state is not None
    if not state.status.is_ended:
        return
    assert not world.subscriptions, f"subscriptions left open: {world.subscriptions}"
    for step_id in world.process.graph.step_ids:
        step = state.step(step_id)
        assert step.status not in (StepStatus.PENDING, StepStatus.READY), (
            f"{step_id} is {step.status} in a {state.status} execution"
        )
        if step.status is StepStatus.SKIPPED:
            assert step.skip_reason
            assert (step_id, step.iteration, step.skip_reason) in world.skips
    assert state.progress(world.process.size) == (world.process.size, world.process.size)
    if state.status is ExecutionStatus.FAILED:
        assert state.error is not None


def check_parent_told(world: World, parent: ParentLink | None) -> None:
    """A child tells its parent once per end (a redrive may end it again), with the
    status it ended with; an execution without a parent tells nobody."""
    state = world.state
    assert state is not None
    if parent is None:
        assert not world.told_parent
        return
    ends = [f for _, f in world.outputs if "ProcessCompleted(" in f or "ProcessFailed(" in f]
    ends += [f for _, f in world.outputs if "ProcessCancelled(" in f]
    ends += [f for _, f in world.outputs if "CompensationFailed(" in f]
    assert len(world.told_parent) == len(ends)
    if state.status.is_ended:
        last = world.told_parent[-1]
        assert (last.parent_execution_id, last.request) == (parent.execution_id, parent.request)
        assert last.status == str(state.status)
        assert len({n.key for n in world.told_parent}) == len(world.told_parent)


def respond(world: World, key: str, data: st.DataObject) -> None:
    command = world.outstanding.pop(key)
    world.clock += timedelta(seconds=1)
    now = world.clock
    if isinstance(command, StartTimer):
        world.clock = max(now, command.fire_at)
        world.send(TimerFired(now=world.clock, timer_id=command.timer_id))
    elif isinstance(command, OpenMessageSubscription):
        ref = command.correlation
        world.send(
            MessageReceived(
                now=now,
                step_id=ref.step_id,
                iteration=ref.iteration,
                attempt=ref.attempt,
                message_id=f"m-{len(world.events)}",
                payload={"status": data.draw(st.sampled_from(["green", "red"]))},
            )
        )
    elif isinstance(command, StartChildExecution):
        status = data.draw(st.sampled_from(["completed", "completed", "failed", "cancelled"]))
        world.send(
            ChildExecutionEnded(
                now=now,
                request=command.key,
                child_execution_id=command.child_execution_id,
                status=status,
                output="done" if status == "completed" else None,
                cost=Money(Decimal(data.draw(st.integers(0, 2))), "USD"),
                error_code="" if status == "completed" else "BAD",
            )
        )
    elif isinstance(command, RequestApproval):
        ref = command.correlation
        decision = data.draw(st.sampled_from(["approved", "rejected", "needs_changes"]))
        world.send(
            ApprovalDecided(
                now=now, step_id=ref.step_id, iteration=ref.iteration, decision=decision
            )
        )
    else:
        ref = command.correlation
        if data.draw(st.integers(0, 5)) == 0:
            code = data.draw(st.sampled_from(["AGENT_UNAVAILABLE", "BAD"]))
            world.send(
                WorkFailed(
                    now=now,
                    step_id=ref.step_id,
                    iteration=ref.iteration,
                    attempt=ref.attempt,
                    code=code,
                    request=command.key,
                )
            )
        else:
            cost = Money(Decimal(data.draw(st.integers(0, 3))), "USD")
            world.send(
                WorkCompleted(
                    now=now,
                    step_id=ref.step_id,
                    iteration=ref.iteration,
                    attempt=ref.attempt,
                    output=data.draw(st.sampled_from(["ok", '{"n": 1}', "7"])),
                    cost=cost,
                    request=command.key,
                )
            )


MAX_EVENTS = 400
MAX_INTERVENTIONS = 12


PARENT = ParentLink("parent", "call", "parent/call/1/1", depth=1)


def run_world(
    process: CompiledProcess,
    flags: dict[str, bool],
    data: st.DataObject,
    parent: ParentLink | None = None,
    migrate_to: CompiledProcess | None = None,
    cancel_odds: int = 10,
) -> World:
    """Drive an execution to its end; one in `cancel_odds` cancel interventions applies."""
    world = World(process)
    world.send(
        StartExecution(now=T0, execution_id="ex", input=flags, triggered_by="prop", parent=parent)
    )
    redrives = 0
    interventions = 0
    for _ in range(MAX_EVENTS):
        state = world.state
        assert state is not None
        status = str(state.status)
        if status in ("completed", "cancelled", "compensation_failed"):
            return world
        if status == "failed":
            if redrives < 2 and data.draw(st.booleans()):
                redrives += 1
                world.clock += timedelta(seconds=1)
                world.send(RetryFailedSteps(now=world.clock, by="prop"))
                continue
            return world
        if (
            migrate_to is not None
            and status in ("running", "paused")
            and world.process is not migrate_to
            and data.draw(st.integers(0, 9)) == 0
        ):
            # A copy of the version: every live execution can move, and goes on there.
            mapping = step_mapping(world.process, migrate_to, {})
            assert migration_problems(world.process, migrate_to, state, mapping) == []
            world.clock += timedelta(seconds=1)
            world.send(MigrateExecution(now=world.clock, target=migrate_to, mapping=mapping))
            assert world.process is migrate_to and world.state.version == "2"
            continue
        # Interventions are bounded so that outcomes always come eventually.
        choice = data.draw(st.integers(0, 19)) if interventions < MAX_INTERVENTIONS else 19
        interventions += choice < 6
        world.clock += timedelta(seconds=1)
        if choice == 0 and status == "running":
            world.send(PauseExecution(now=world.clock, by="prop"))
        elif status == "paused" and (choice <= 2 or choice == 19 or not world.outstanding):
            world.send(ResumeExecution(now=world.clock, by="prop"))
        elif choice == 3 and data.draw(st.integers(0, cancel_odds - 1)) == 0:
            world.send(
                CancelExecution(
                    now=world.clock, by="prop", reason="random", compensate=data.draw(st.booleans())
                )
            )
        elif choice == 4 and world.events:
            world.duplicate_last()
        elif choice == 5 and world.outstanding:
            key = data.draw(st.sampled_from(sorted(world.outstanding)))
            if not isinstance(world.outstanding[key], StartTimer | OpenMessageSubscription):
                world.outstanding.pop(key)
                world.send(CommandRejected(now=world.clock, key=key, code="INVALID_ARGUMENT"))
        else:
            assert world.outstanding, f"stuck: {status} with nothing outstanding"
            key = data.draw(st.sampled_from(sorted(world.outstanding)))
            respond(world, key, data)
    raise AssertionError("did not terminate")


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    spec=definitions(),
    flags=st.fixed_dictionaries({f: st.booleans() for f in FLAGS}),
    data=st.data(),
)
def test_random_executions_terminate_and_keep_their_invariants(
    spec: ProcessSpec, flags: dict[str, bool], data: st.DataObject
) -> None:
    process = CompiledProcess.compile("def", "1", spec)
    assert process.graph.find_cycles() == []
    parent = PARENT if data.draw(st.booleans()) else None
    world = run_world(process, flags, data, parent)
    check_ended(world)
    check_parent_told(world, parent)

    assert len(world.starts) == len(set(world.starts)), "an attempt started twice"
    assert len(world.completions) == len(set(world.completions)), "completed twice in an iteration"

    # determinism: the same events give the same decisions
    replay = World(process)
    for event in world.events:
        replay.send(event)
    assert replay.outputs == world.outputs
    assert replay.state is not None and world.state is not None
    assert replay.state.to_dict() == world.state.to_dict()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    spec=definitions(),
    flags=st.fixed_dictionaries({f: st.booleans() for f in FLAGS}),
    data=st.data(),
)
def test_executions_moved_to_another_version_midway_keep_their_invariants(
    spec: ProcessSpec, flags: dict[str, bool], data: st.DataObject
) -> None:
    """A live execution moved (at a random point) to a copy of its version can always
    move, ends, starts no attempt twice, and replays to the same decisions."""
    process = CompiledProcess.compile("def", "1", spec)
    world = run_world(process, flags, data, migrate_to=CompiledProcess.compile("def-2", "2", spec))
    check_ended(world)
    assert len(world.starts) == len(set(world.starts)), "an attempt started twice"
    assert len(world.completions) == len(set(world.completions)), "completed twice in an iteration"
    replay = World(process)
    for event in world.events:
        replay.send(event)
    assert replay.outputs == world.outputs


def test_definitions_from_the_validation_strategies_run_too() -> None:
    """The same invariants over the definition service's generator of valid specs."""
    strategies = pytest.importorskip("trinity_process_model.testing_strategies")
    inputs = {"topic": "news", "flag": True, "items": [1, 2], "count": 5}

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(spec=strategies.process_specs(max_steps=8), data=st.data())
    def check(spec: ProcessSpec, data: st.DataObject) -> None:
        process = CompiledProcess.compile("def", "1", spec)
        world = run_world(process, inputs, data)
        check_ended(world)
        assert len(world.starts) == len(set(world.starts))
        assert len(world.completions) == len(set(world.completions))

    check()
