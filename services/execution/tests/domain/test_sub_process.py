"""sub_process steps: a child execution per attempt, its end continues the parent."""

from __future__ import annotations

from engine_support import Driver, agent, spec, usd

from trinity_execution.domain import (
    CancelChildExecution,
    ChildExecutionEnded,
    NotifyParent,
    ParentLink,
    ProcessStarted,
    StartChildExecution,
    StartExecution,
    child_execution_id,
)
from trinity_execution.domain.events import CancelExecution
from trinity_process_model.model import RetryPolicy, Step, SubProcessConfig


def call(step_id: str, *deps: str, **kw: object) -> Step:
    config = SubProcessConfig("review", "1.2", {"pr": "{{ steps.open_pr.output.number }}"})
    return Step(step_id, config, depends_on=deps, **kw)  # type: ignore[arg-type]


def parent(**kw: object) -> Driver:
    return Driver.of(
        spec(agent("open_pr"), call("review", "open_pr", **kw), agent("merge", "review"))
    )


def started(driver: Driver) -> StartChildExecution:
    return driver.commands_of(StartChildExecution)[-1]


def ended(driver: Driver, status: str, **kw: object) -> None:
    command = started(driver)
    driver.send(
        ChildExecutionEnded(
            now=driver.tick(),
            request=command.key,
            child_execution_id=command.child_execution_id,
            status=status,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_the_step_starts_a_child_named_by_its_attempt_with_a_rendered_input() -> None:
    driver = parent()
    driver.start()
    driver.complete("open_pr", output='{"number": 42}')
    command = started(driver)
    assert command.key == "ex-1/review/1/1"
    assert command.child_execution_id == child_execution_id(command.key)
    assert (command.process, command.version, command.input) == ("review", "1.2", {"pr": "42"})
    assert (command.triggered_by, command.depth) == ("me", 1)
    assert driver.step_status("review") == "waiting"
    assert driver.state is not None
    assert driver.state.step("review").child == command.child_execution_id


def test_a_completed_child_gives_its_output_and_cost_to_the_step() -> None:
    driver = parent()
    driver.start()
    driver.complete("open_pr", output='{"number": 42}')
    ended(driver, "completed", output="LGTM", structured={"verdict": "ok"}, cost=usd(3))
    assert driver.step_status("review") == "completed"
    assert driver.state is not None
    step = driver.state.step("review")
    assert (step.output, step.structured, step.cost) == ("LGTM", {"verdict": "ok"}, usd(3))
    assert driver.state.total_cost == usd(3)
    assert driver.work("merge")  # the path goes on
    before = driver.state.to_dict()
    ended(driver, "completed", output="again")  # a second answer changes nothing
    assert driver.decisions[-1].ignored and driver.state.to_dict() == before


def test_a_failed_child_fails_the_attempt_and_a_retry_starts_a_new_child() -> None:
    driver = parent(retry=RetryPolicy(max_attempts=2))
    driver.start()
    driver.complete("open_pr", output='{"number": 42}')
    first = started(driver)
    ended(driver, "failed", error_code="AGENT_UNAVAILABLE")
    driver.fire("review", "retry_backoff")
    second = started(driver)
    assert second.key == "ex-1/review/1/2" and second.child_execution_id != first.child_execution_id
    ended(driver, "cancelled")
    assert driver.status == "failed"
    assert driver.state is not None and driver.state.error is not None
    assert driver.state.error.code == "CHILD_EXECUTION_FAILED"


def test_cancelling_the_parent_cancels_the_child() -> None:
    driver = parent()
    driver.start()
    driver.complete("open_pr", output='{"number": 42}')
    driver.send(CancelExecution(now=driver.tick(), by="me"))
    (cancel,) = driver.commands_of(CancelChildExecution)
    assert cancel.key == started(driver).key


def test_a_child_tells_its_parent_how_it_ended_with_its_last_output() -> None:
    link = ParentLink("parent-1", "review", "parent-1/review/1/1", depth=2)
    child = Driver.of(spec(agent("a"), agent("b", "a")))
    child.send(
        StartExecution(now=child.tick(0), execution_id="ex-1", triggered_by="me", parent=link)
    )
    (fact,) = child.facts_of(ProcessStarted)
    assert (fact.parent_execution_id, fact.parent_step_id) == ("parent-1", "review")
    child.complete("a", output="first", cost=usd(1))
    assert not child.commands_of(NotifyParent)
    child.complete("b", output="last", cost=usd(2))
    (told,) = child.commands_of(NotifyParent)
    assert (told.parent_execution_id, told.request) == ("parent-1", "parent-1/review/1/1")
    assert (told.status, told.output, told.cost) == ("completed", "last", usd(3))
    # a grandchild would be one deeper
    assert child.state is not None and child.state.parent == link


def test_a_cancelled_child_tells_its_parent_too() -> None:
    link = ParentLink("parent-1", "review", "parent-1/review/1/1")
    child = Driver.of(spec(agent("a")))
    child.send(StartExecution(now=child.tick(0), execution_id="ex-1", parent=link))
    child.send(CancelExecution(now=child.tick(), by="me", reason="parent cancelled"))
    (told,) = child.commands_of(NotifyParent)
    assert (told.status, told.error_code) == ("cancelled", "CANCELLED")
