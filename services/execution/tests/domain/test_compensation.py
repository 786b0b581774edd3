"""Compensation: completed steps undone in reverse order when the execution fails or is
cancelled with compensate; each completion once; a compensation that fails for good
ends COMPENSATION_FAILED naming its step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from engine_support import T0, Driver, agent, gateway, spec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import (
    FLAGS,
    MAX_EVENTS,
    World,
    check_ended,
    check_parent_told,
    definitions,
    respond,
    run_world,
)

from trinity_execution.domain import (
    CancelChildExecution,
    CancelExecution,
    CommandRejected,
    CompensationCompleted,
    CompensationFailed,
    CompensationStarted,
    CompiledProcess,
    ExecutionStatus,
    NotifyParent,
    ParentLink,
    PauseExecution,
    ProcessCancelled,
    ProcessFailed,
    RequestWork,
    RetryFailedSteps,
    StartExecution,
    StartTimer,
    StepCompensated,
    StepCompensationStatus,
    StepCompleted,
    TimerFired,
    WorkCompleted,
    WorkFailed,
    decide,
)
from trinity_process_model.model import (
    ActionKind,
    AgentTaskConfig,
    Compensation,
    ProcessSpec,
    RetryPolicy,
    Route,
    Step,
    SubProcessConfig,
    ToolRunConfig,
)


def undo(message: str = "undo {{ step.output }}", **kw: Any) -> Compensation:
    return Compensation(AgentTaskConfig("undoer", message), **kw)


def saga(**kw: Any) -> ProcessSpec:
    """reserve → charge → ship; reserve and charge can be undone, ship cannot."""
    return spec(
        agent("reserve", compensate=undo("release {{ step.output }}")),
        agent("charge", "reserve", compensate=undo(**kw)),
        agent("ship", "charge"),
    )


def compensation_work(driver: Driver, step_id: str) -> RequestWork:
    return driver.work(f"{step_id}/compensate")


def answer(driver: Driver, step_id: str, ok: bool = True, output: str = "undone") -> None:
    ref = compensation_work(driver, step_id).correlation
    assert ref is not None
    if ok:
        driver.send(
            WorkCompleted(
                now=driver.tick(),
                step_id=ref.step_id,
                iteration=ref.iteration,
                attempt=ref.attempt,
                output=output,
            )
        )
    else:
        driver.send(
            WorkFailed(
                now=driver.tick(),
                step_id=ref.step_id,
                iteration=ref.iteration,
                attempt=ref.attempt,
                code="UNDO_FAILED",
            )
        )


def failed_at_ship(**kw: Any) -> Driver:
    driver = Driver.of(saga(**kw))
    driver.start()
    driver.complete("reserve", output="room 7")
    driver.complete("charge", output="42 EUR")
    driver.fail("ship", code="BAD")
    return driver


def test_a_failure_undoes_completed_steps_latest_first_then_fails() -> None:
    driver = failed_at_ship()
    assert driver.status == "compensating"
    started = driver.facts_of(CompensationStarted)
    assert [s.targets for s in started] == [(("charge", 1), ("reserve", 1))]
    assert not driver.facts_of(ProcessFailed)
    work = compensation_work(driver, "charge")
    assert work.key == "ex-1/charge/compensate/1/1"
    assert work.payload.message == "undo 42 EUR"  # type: ignore[union-attr]
    answer(driver, "charge")
    assert compensation_work(driver, "reserve").payload.message == "release room 7"  # type: ignore[union-attr]
    answer(driver, "reserve")
    assert driver.status == "failed"
    assert [(f.step_id, f.iteration) for f in driver.facts_of(StepCompensated)] == [
        ("charge", 1),
        ("reserve", 1),
    ]
    kinds = [type(f).__name__ for f in driver.facts[-3:]]
    assert kinds == ["StepCompensated", "CompensationCompleted", "ProcessFailed"]
    assert driver.state is not None and driver.state.failed_step_id == "ship"
    assert driver.state.error is not None and driver.state.error.code == "BAD"
    comp = driver.state.compensation
    assert comp is not None and comp.ended_at is not None
    assert [s.status for s in comp.steps] == [StepCompensationStatus.COMPENSATED] * 2


def test_a_compensated_failure_cannot_be_redriven_nor_compensated_again() -> None:
    driver = failed_at_ship()
    answer(driver, "charge")
    answer(driver, "reserve")
    assert driver.send(RetryFailedSteps(now=driver.tick())).ignored
    before = len(driver.commands)
    decision = driver.send(CancelExecution(now=driver.tick(), compensate=True))
    assert driver.status == "cancelled"
    assert not any(isinstance(c, RequestWork) for c in decision.commands)
    assert len(driver.commands) == before


def test_nothing_completed_to_undo_fails_as_before() -> None:
    driver = Driver.of(saga())
    driver.start()
    driver.fail("reserve", code="BAD")
    assert driver.status == "failed"
    assert not driver.facts_of(CompensationStarted)
    assert driver.send(RetryFailedSteps(now=driver.tick())).state.status is ExecutionStatus.RUNNING


def test_compensations_retry_by_their_own_policy() -> None:
    driver = failed_at_ship(retry=RetryPolicy(max_attempts=2, initial_backoff=timedelta(seconds=5)))
    answer(driver, "charge", ok=False)
    comp = driver.state.compensation  # type: ignore[union-attr]
    assert comp is not None and comp.steps[0].status is StepCompensationStatus.WAITING
    assert driver.status == "compensating"
    driver.fire("charge/compensate", "retry_backoff")
    assert compensation_work(driver, "charge").key == "ex-1/charge/compensate/1/2"
    answer(driver, "charge")
    answer(driver, "reserve")
    assert driver.status == "failed"


def test_a_compensation_failing_for_good_ends_compensation_failed_naming_the_step() -> None:
    driver = failed_at_ship()
    answer(driver, "charge", ok=False)  # one attempt: no retry policy anywhere
    assert driver.status == "compensation_failed"
    (failed,) = driver.facts_of(CompensationFailed)
    assert (failed.step_id, failed.iteration, failed.not_compensated) == ("charge", 1, 2)
    assert failed.error.code == "UNDO_FAILED"
    assert not driver.facts_of(ProcessFailed) and not driver.facts_of(CompensationCompleted)
    assert not [c for c in driver.commands_of(RequestWork) if c.key.startswith("ex-1/reserve/c")]
    assert driver.state is not None and driver.state.status.is_ended
    assert driver.state.compensation is not None
    assert driver.state.compensation.failed_step_id == "charge"
    for event in (
        CancelExecution(now=driver.tick(), compensate=True),
        RetryFailedSteps(now=driver.tick()),
        PauseExecution(now=driver.tick()),
    ):
        assert driver.send(event).ignored


def test_a_refused_compensation_request_fails_it_for_good() -> None:
    driver = failed_at_ship(retry=RetryPolicy(max_attempts=5))
    key = compensation_work(driver, "charge").key
    driver.send(CommandRejected(now=driver.tick(), key=key, code="INVALID_ARGUMENT"))
    assert driver.status == "compensation_failed"


def test_a_template_that_does_not_render_fails_the_compensation() -> None:
    driver = failed_at_ship(message="{{ step.output.missing.deeper }}")
    assert driver.status == "compensation_failed"
    (failed,) = driver.facts_of(CompensationFailed)
    assert failed.step_id == "charge" and failed.error.code.startswith("EXPRESSION")


def test_cancel_with_compensate_undoes_then_cancels() -> None:
    driver = Driver.of(saga())
    driver.start()
    driver.complete("reserve", output="room 7")
    driver.send(CancelExecution(now=driver.tick(), by="ops", reason="no", compensate=True))
    assert driver.status == "compensating"
    assert driver.step_status("charge") == "failed"  # its running attempt was cancelled
    assert driver.send(CancelExecution(now=driver.tick())).ignored
    answer(driver, "reserve")
    assert driver.status == "cancelled"
    (cancelled,) = driver.facts_of(ProcessCancelled)
    assert (cancelled.cancelled_by, cancelled.reason) == ("ops", "no")


def test_cancel_without_compensate_undoes_nothing() -> None:
    driver = Driver.of(saga())
    driver.start()
    driver.complete("reserve")
    driver.send(CancelExecution(now=driver.tick()))
    assert driver.status == "cancelled"
    assert not driver.facts_of(CompensationStarted)


def test_late_and_duplicate_answers_change_nothing() -> None:
    driver = failed_at_ship(retry=RetryPolicy(max_attempts=3))
    ref = compensation_work(driver, "charge").correlation
    assert ref is not None
    answer(driver, "charge")
    for event in (
        WorkCompleted(
            now=driver.tick(), step_id=ref.step_id, iteration=1, attempt=1, output="again"
        ),
        WorkFailed(now=driver.tick(), step_id=ref.step_id, iteration=1, attempt=1, code="X"),
        WorkCompleted(now=driver.tick(), step_id="ship/compensate", iteration=1, attempt=1),
        TimerFired(now=driver.tick(), timer_id="ex-1/charge/compensate/1/1/retry_backoff"),
    ):
        assert driver.send(event).ignored


def test_each_loop_iteration_is_compensated_latest_first() -> None:
    body = spec(
        agent("draft", compensate=undo("undo draft {{ step.iteration }}: {{ step.output }}")),
        gateway(
            "again",
            "draft",
            routes=[
                Route("draft", "{{ steps.draft.iteration < 3 }}", max_iterations=3),
                Route("publish", is_default=True),
            ],
        ),
        agent("publish"),
    )
    driver = Driver.of(body)
    driver.start()
    for n in (1, 2, 3):
        driver.complete("draft", output=f"v{n}")
    driver.fail("publish", code="BAD")
    started = driver.facts_of(CompensationStarted)[0]
    assert started.targets == (("draft", 3), ("draft", 2), ("draft", 1))
    messages = []
    for _ in range(3):
        messages.append(compensation_work(driver, "draft").payload.message)  # type: ignore[union-attr]
        answer(driver, "draft")
    assert messages == ["undo draft 3: v3", "undo draft 2: v2", "undo draft 1: v1"]
    assert driver.status == "failed"


def test_a_child_whose_compensation_failed_tells_its_parent() -> None:
    driver = Driver.of(saga())
    driver.send(
        StartExecution(
            now=driver.tick(0),
            execution_id="ex-1",
            parent=ParentLink("parent", "call", "parent/call/1/1"),
        )
    )
    driver.complete("reserve")
    driver.fail("charge", code="BAD")
    answer(driver, "reserve", ok=False)
    (told,) = driver.commands_of(NotifyParent)
    assert (told.status, told.error_code) == ("compensation_failed", "COMPENSATION_FAILED")


def test_a_compensation_attempt_runs_within_its_timeout() -> None:
    timed = Compensation(AgentTaskConfig("undoer", "undo"), timeout=timedelta(minutes=2))
    driver = Driver.of(spec(agent("open", compensate=timed), agent("merge", "open")))
    driver.start()
    driver.complete("open")
    driver.fail("merge")
    assert compensation_work(driver, "open").timeout == timedelta(minutes=2)


def test_a_tool_run_compensation_renders_its_arguments() -> None:
    tool = Compensation(ToolRunConfig(ActionKind.PUBLISH, {"close": "{{ step.output.pr }}"}))
    driver = Driver.of(spec(agent("open", compensate=tool), agent("merge", "open")))
    driver.start()
    driver.complete("open", output='{"pr": 12}')
    driver.fail("merge")
    assert compensation_work(driver, "open").payload.arguments == {"close": "12"}  # type: ignore[union-attr]


# ------------------------------------------------------------------ properties


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    spec_=definitions(),
    flags=st.fixed_dictionaries({f: st.booleans() for f in FLAGS}),
    data=st.data(),
)
def test_compensations_run_once_each_in_reverse_order_of_completion(
    spec_: ProcessSpec, flags: dict[str, bool], data: st.DataObject
) -> None:
    """Over random definitions and outcomes (retries, refusals, cancels with and without
    compensate, redrives, pauses): the completions a compensation undoes are exactly the
    compensable completions, latest first; each is compensated at most once, requested
    one at a time in that order; the execution ends in a clear terminal state."""
    process = CompiledProcess.compile("def", "1", spec_)
    parent = ParentLink("p", "call", "p/call/1/1") if data.draw(st.booleans()) else None
    world = run_world(process, flags, data, parent, cancel_odds=2)
    state = world.state
    assert state is not None
    check_ended(world)
    check_parent_told(world, parent)

    if state.status is ExecutionStatus.COMPENSATING:
        raise AssertionError("ended compensating")
    check_compensation(process, world)


@st.composite
def sagas(draw: st.DrawFn) -> ProcessSpec:
    """Agent steps in a random DAG, most of them compensable, sometimes in a loop."""
    n = draw(st.integers(1, 6))
    steps = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else []
        kw: dict[str, Any] = {}
        if draw(st.integers(0, 9)) < 7:
            retry = RetryPolicy(max_attempts=draw(st.integers(1, 3)))
            kw["compensate"] = undo("undo {{ step.id }} {{ step.iteration }}", retry=retry)
        if draw(st.booleans()):
            kw["retry"] = RetryPolicy(max_attempts=2)
        steps.append(agent(f"s{i}", *(f"s{d}" for d in deps), **kw))
    if draw(st.booleans()):
        steps.append(
            gateway(
                "loop",
                f"s{n - 1}",
                routes=[
                    Route("s0", "{{ steps.s0.iteration < 3 }}", max_iterations=3),
                    Route("end", is_default=True),
                ],
            )
        )
        steps.append(agent("end"))
    return spec(*steps)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec_=sagas(), data=st.data())
def test_sagas_failed_or_cancelled_at_random_undo_each_completion_once(
    spec_: ProcessSpec, data: st.DataObject
) -> None:
    """Random outcomes (completions, failures, refusals, duplicates) and a cancel with
    compensate at a random point: the same order and exactly-once properties, and an
    end in FAILED, CANCELLED or COMPENSATION_FAILED (never stuck compensating)."""
    process = CompiledProcess.compile("def", "1", spec_)
    world = World(process)
    world.send(StartExecution(now=T0, execution_id="ex", triggered_by="prop"))
    for _ in range(MAX_EVENTS):
        state = world.state
        assert state is not None
        if state.status.is_ended:
            break
        world.clock += timedelta(seconds=1)
        choice = data.draw(st.integers(0, 9))
        if choice == 0 and state.status in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED):
            world.send(CancelExecution(now=world.clock, by="prop", compensate=True))
        elif choice == 1 and world.events:
            world.duplicate_last()
        elif choice == 2 and world.outstanding:
            key = data.draw(st.sampled_from(sorted(world.outstanding)))
            if not isinstance(world.outstanding[key], StartTimer):
                world.outstanding.pop(key)
                world.send(CommandRejected(now=world.clock, key=key, code="INVALID_ARGUMENT"))
        else:
            assert world.outstanding, f"stuck: {state.status} with nothing outstanding"
            respond(world, data.draw(st.sampled_from(sorted(world.outstanding))), data)
    else:
        raise AssertionError("did not terminate")
    assert world.state is not None
    check_compensation(process, world)


def check_compensation(process: CompiledProcess, world: World) -> None:
    state = world.state
    assert state is not None
    facts = world.facts
    starts = [f for f in facts if isinstance(f, CompensationStarted)]
    assert len(starts) <= 1, "compensated twice"
    compensated = [(f.step_id, f.iteration) for f in facts if isinstance(f, StepCompensated)]
    failed = [f for f in facts if isinstance(f, CompensationFailed)]
    assert len(compensated) == len(set(compensated)), "a completion undone twice"
    if not starts:
        assert not compensated and not failed and state.compensation is None
        assert state.status is not ExecutionStatus.COMPENSATION_FAILED
        return
    start = starts[0]
    at = facts.index(start)
    completed = [
        (f.step_id, f.iteration)
        for f in facts[:at]
        if isinstance(f, StepCompleted) and process.step(f.step_id).compensate is not None
    ]
    assert list(start.targets) == list(reversed(completed))
    assert compensated == list(start.targets[: len(compensated)]), "out of order"
    assert not any(isinstance(f, StepCompleted) for f in facts[at:]), "a step ran meanwhile"
    # requested one at a time, in order, each attempt once
    keys = [k for _, commands in world.outputs for k in _work_keys(commands)]
    keys = [k for k in keys if "/compensate/" in k]
    assert len(keys) == len(set(keys)), "a compensation attempt requested twice"
    targets = list(start.targets)
    positions = [targets.index(_target_of(k)) for k in keys]
    assert positions == sorted(positions), "requested out of order"
    assert set(positions) <= set(range(len(compensated) + len(failed) + 1))
    if state.status is ExecutionStatus.COMPENSATION_FAILED:
        assert len(failed) == 1 and state.compensation is not None
        assert failed[0].step_id == state.compensation.failed_step_id
        assert (failed[0].step_id, failed[0].iteration) == start.targets[len(compensated)]
        assert failed[0].not_compensated == len(targets) - len(compensated)
    else:
        assert state.status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED), state.status
        assert not failed
        assert compensated == targets, "not every completion was undone"
        ends = [f for f in facts[at:] if isinstance(f, CompensationCompleted)]
        assert len(ends) == 1 and ends[0].compensated == len(targets)
        last = facts[-1]
        expected = ProcessFailed if state.status is ExecutionStatus.FAILED else ProcessCancelled
        assert isinstance(last, expected)


def _work_keys(commands: str) -> list[str]:
    """The RequestWork keys in a decision's commands (World keeps their repr)."""
    keys = []
    marker = "RequestWork(key='"
    at = commands.find(marker)
    while at != -1:
        end = commands.index("'", at + len(marker))
        keys.append(commands[at + len(marker) : end])
        at = commands.find(marker, end)
    return keys


def _target_of(key: str) -> tuple[str, int]:
    """(step id, iteration) of a compensation key ``ex/<step>/compensate/<it>/<attempt>``."""
    step_id, _, iteration, _attempt = key.split("/")[1:]
    return step_id, int(iteration)


def test_decide_never_changes_a_compensating_state() -> None:
    driver = failed_at_ship()
    state = driver.state
    assert state is not None
    before = state.to_dict()
    ref = compensation_work(driver, "charge").correlation
    assert ref is not None
    decide(
        driver.process,
        state,
        WorkCompleted(now=driver.tick(), step_id=ref.step_id, iteration=1, attempt=1),
    )
    assert state.to_dict() == before


def _with_child(compensable: bool) -> Driver:
    """reserve (compensable or not), then a child execution beside a step that may fail."""
    driver = Driver.of(
        spec(
            agent("reserve", compensate=undo() if compensable else None),
            Step("call", SubProcessConfig("child"), depends_on=("reserve",)),
            agent("side"),
        )
    )
    driver.start()
    driver.complete("reserve")
    return driver


def test_cancel_with_compensate_cancels_running_children_with_compensate() -> None:
    driver = _with_child(compensable=False)  # nothing of its own to undo: the child still
    driver.send(CancelExecution(now=driver.tick(), compensate=True))
    assert driver.status == "cancelled"
    assert [c.compensate for c in driver.commands_of(CancelChildExecution)] == [True]


def test_children_compensate_when_their_parent_does() -> None:
    driver = _with_child(compensable=True)
    driver.fail("side", code="BAD")
    assert driver.status == "compensating"
    assert [c.compensate for c in driver.commands_of(CancelChildExecution)] == [True]

    plain = _with_child(compensable=False)
    plain.fail("side", code="BAD")
    assert plain.status == "failed"
    assert [c.compensate for c in plain.commands_of(CancelChildExecution)] == [False]
