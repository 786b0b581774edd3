"""Migrating a running execution to another version: what can move, and how it moves."""

from __future__ import annotations

from datetime import timedelta

from engine_support import Driver, agent, approval, notification, spec, timer

from trinity_execution.domain import (
    CompiledProcess,
    Decision,
    ExecutionMigrated,
    ExecutionStatus,
    MigrateExecution,
    PauseExecution,
    ResumeExecution,
    StepCompleted,
    StepStarted,
    TimerFired,
    mapping_violations,
    migration_problems,
    step_mapping,
)
from trinity_process_model.model import ProcessSpec


def v2(s: ProcessSpec) -> CompiledProcess:
    return CompiledProcess.compile("def-2", "2.0", s)


V1 = spec(agent("draft"), approval("review", "draft"), notification("tell", "review"))
# v2 adds a step after the approval and changes a later template.
V2 = spec(
    agent("draft"),
    approval("review", "draft"),
    agent("polish", "review", message="Polish {{ steps.draft.output }}"),
    notification("tell", "polish", message="v2: {{ steps.polish.output }}"),
)


def parked_at_review() -> Driver:
    driver = Driver.of(V1)
    driver.start()
    driver.complete("draft", output="text")
    return driver


def move(
    driver: Driver, target: CompiledProcess, explicit: dict[str, str] | None = None
) -> Decision:
    mapping = step_mapping(driver.process, target, explicit or {})
    assert driver.state is not None
    before = driver.state.to_dict()
    decision = driver.send(
        MigrateExecution(now=driver.tick(), target=target, mapping=mapping, by="ops")
    )
    assert driver.state.to_dict() != before and not decision.ignored, decision.ignored
    assert decision.commands == []  # outstanding work, approvals and timers stay untouched
    driver.process = target
    return decision


def problems(driver: Driver, target: CompiledProcess, explicit: dict[str, str] | None = None):
    assert driver.state is not None
    mapping = step_mapping(driver.process, target, explicit or {})
    return [
        (p.code, p.step_id)
        for p in migration_problems(driver.process, target, driver.state, mapping)
    ]


def test_an_execution_at_an_approval_moves_and_completes_on_the_new_version() -> None:
    driver = parked_at_review()
    request = driver.approval_request("review")
    target = v2(V2)
    move(driver, target)
    (migrated,) = [f for f in driver.facts if isinstance(f, ExecutionMigrated)]
    assert (migrated.from_version, migrated.execution.process_version) == ("1.0", "2.0")
    assert migrated.step_mapping == {"draft": "draft", "review": "review"}
    assert driver.state is not None and driver.state.version == "2.0"
    # the approval requested under v1 answers the same step under v2 (same request key)
    assert driver.approval_request("review") is request
    driver.decide_approval("review", "approved")
    assert driver.work("polish").payload.message == "Polish text"  # type: ignore[union-attr]
    driver.complete("polish", output="shiny")
    assert driver.work("tell").payload.message == "v2: shiny"  # type: ignore[union-attr]
    driver.complete("tell")
    assert driver.state.status is ExecutionStatus.COMPLETED
    assert driver.state.progress(target.size) == (4, 4)


def test_work_outstanding_and_a_timer_carry_over() -> None:
    v1 = spec(agent("a"), timer("wait", "a", duration=timedelta(hours=1)), agent("b", "wait"))
    v2_spec = spec(
        agent("a"),
        timer("wait", "a", duration=timedelta(hours=1)),
        agent("b", "wait", message="new {{ steps.a.output }}"),
        agent("c", "b"),
    )
    driver = Driver.of(v1)
    driver.start()
    key = driver.work("a").key
    move(driver, v2(v2_spec))
    driver.complete("a", output="x")  # the v1 work's answer completes the v2 step
    assert driver.work("a").key == key
    fired = driver.timer_of("wait", "step_timer")
    move(driver, CompiledProcess.compile("def-3", "3.0", v2_spec))  # again, timer waiting
    driver.send(TimerFired(now=fired.fire_at, timer_id=fired.timer_id))
    assert driver.work("b").payload.message == "new x"  # type: ignore[union-attr]
    driver.complete("b")
    driver.complete("c")
    assert driver.state is not None and driver.state.status is ExecutionStatus.COMPLETED


def test_what_cannot_move_is_named_with_its_step() -> None:
    driver = parked_at_review()
    # the waiting approval is gone
    assert problems(driver, v2(spec(agent("draft"), notification("tell", "draft")))) == [
        ("STEP_HAS_NO_COUNTERPART", "review")
    ]
    # the waiting step is now an agent task
    changed = spec(agent("draft"), agent("review", "draft"), notification("tell", "review"))
    assert problems(driver, v2(changed)) == [("STEP_KIND_CHANGED", "review")]
    # renaming the waiting step would orphan its request key
    renamed = spec(agent("draft"), approval("check", "draft"), notification("tell", "check"))
    assert problems(driver, v2(renamed), {"review": "check"}) == [("ACTIVE_STEP_RENAMED", "review")]
    # a step added before the approval never runs, and the approval comes after it
    before = spec(
        agent("draft"),
        agent("lint", "draft"),
        approval("review", "lint"),
        notification("tell", "review"),
    )
    assert problems(driver, v2(before)) == [
        ("STEP_NEVER_RUNS", "lint"),
        ("STEP_ORDER_CHANGED", "review"),
    ]
    # a join that would wait for a new parallel step that nothing starts
    join = spec(
        agent("draft"),
        agent("side"),
        approval("review", "draft"),
        notification("tell", "review", "side"),
    )
    codes = problems(driver, v2(join))
    assert codes == [("STEP_NEVER_RUNS", "side")]
    assert driver.state is not None
    mapping = step_mapping(driver.process, v2(join), {})
    (found,) = migration_problems(driver.process, v2(join), driver.state, mapping)
    assert "'tell' would wait for it" in found.message
    # and the engine refuses such a move itself: nothing changes
    decision = driver.send(
        MigrateExecution(now=driver.tick(), target=v2(join), mapping=mapping, by="ops")
    )
    assert decision.ignored and not decision.facts


def test_explicit_mapping_renames_finished_steps_and_is_checked() -> None:
    driver = parked_at_review()
    renamed = spec(agent("write"), approval("review", "write"), notification("tell", "review"))
    target = v2(renamed)
    assert problems(driver, target) == [
        ("STEP_NEVER_RUNS", "write"),
        ("STEP_ORDER_CHANGED", "review"),
    ]
    decision = move(driver, target, {"draft": "write"})
    assert driver.state is not None and driver.state.step("write").output == "text"
    # A store keeping each step apart rewrites the moved steps and drops the old id.
    assert decision.dropped_steps == ("draft",)
    assert set(decision.changed_steps) == {"write", "review"}
    assert mapping_violations(driver.process, target, {"nope": "write"}) == [
        ("nope", "version 2.0 has no step 'nope'")
    ]
    assert mapping_violations(driver.process, target, {"write": "x"}) == [
        ("write", "version 2.0 has no step 'x'")
    ]


def test_a_paused_execution_moves_with_its_ready_steps_and_an_ended_one_does_not() -> None:
    driver = Driver.of(V1)
    driver.start()
    driver.send(PauseExecution(now=driver.tick(), by="ops"))
    driver.complete("draft", output="text")
    assert driver.state is not None and driver.state.ready == ["review"]
    target = v2(V2)
    move(driver, target)
    assert driver.state.ready == ["review"]
    driver.send(ResumeExecution(now=driver.tick(), by="ops"))
    assert any(isinstance(f, StepStarted) and f.step_id == "review" for f in driver.facts)
    driver.decide_approval("review", "approved")
    driver.complete("polish")
    driver.complete("tell")
    assert driver.state.status is ExecutionStatus.COMPLETED
    assert problems(driver, v2(V1)) == [("EXECUTION_ENDED", "")]
    assert [f.step_id for f in driver.facts if isinstance(f, StepCompleted)][-1] == "tell"
