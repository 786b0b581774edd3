"""for_each on sub_process steps: one child per item, bounded concurrency, ordered outputs."""

from __future__ import annotations

import json

from engine_support import Driver, agent, spec, usd

from trinity_execution.domain import (
    CancelChildExecution,
    ChildExecutionEnded,
    StartChildExecution,
)
from trinity_execution.domain.events import CancelExecution
from trinity_process_model.model import Budget, BudgetAction, Step, SubProcessConfig


def each(**kw: object) -> Step:
    config = SubProcessConfig(
        "per-file",
        input={"file": "{{ item }}", "at": "{{ item_index }}"},
        for_each="{{ steps.plan.output.files }}",
        **kw,  # type: ignore[arg-type]
    )
    return Step("files", config, depends_on=("plan",))


def planned(count: int, budget: Budget | None = None, **kw: object) -> Driver:
    extra = {"budget": budget} if budget else {}
    driver = Driver.of(spec(agent("plan"), each(**kw), agent("after", "files"), **extra))
    driver.start()
    files = ", ".join(f'"f{i}"' for i in range(count))
    driver.complete("plan", output='{"files": [' + files + "]}")
    return driver


def starts(driver: Driver) -> list[StartChildExecution]:
    return driver.commands_of(StartChildExecution)


def end(driver: Driver, index: int, status: str = "completed", **kw: object) -> None:
    (command,) = [c for c in starts(driver) if c.key.endswith(f"/item/{index}")]
    driver.send(
        ChildExecutionEnded(
            now=driver.tick(),
            request=command.key,
            child_execution_id=command.child_execution_id,
            status=status,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_items_run_at_most_max_concurrency_at_once_and_outputs_keep_item_order() -> None:
    driver = planned(5, max_concurrency=2)
    assert [c.input for c in starts(driver)] == [
        {"file": "f0", "at": "0"},
        {"file": "f1", "at": "1"},
    ]
    for index in (1, 0, 3, 2, 4):  # children end out of order
        end(driver, index, output=f"out {index}")
    assert len(starts(driver)) == 5
    assert driver.state is not None
    step = driver.state.step("files")
    assert step.status == "completed"
    assert step.structured == {"items": [f"out {i}" for i in range(5)], "failed": 0}
    assert driver.work("after")
    before = driver.state.to_dict()
    end(driver, 2, output="again")  # a redelivered end changes nothing
    assert driver.decisions[-1].ignored and driver.state.to_dict() == before


def test_each_items_cost_counts_against_the_budget_as_it_ends() -> None:
    driver = planned(4, Budget(usd(2), BudgetAction.FAIL), max_concurrency=4)
    end(driver, 0, output="a", cost=usd(1))
    assert driver.state is not None and driver.state.total_cost == usd(1)
    end(driver, 1, output="b", cost=usd(1))
    assert driver.status == "failed" and driver.state.error is not None
    assert driver.state.error.code == "BUDGET_EXCEEDED"
    cancelled = {c.key.rsplit("/", 1)[1] for c in driver.commands_of(CancelChildExecution)}
    assert cancelled == {"2", "3"}  # the outstanding items are stopped


def test_fail_fast_cancels_the_running_items_and_tolerated_failures_go_on() -> None:
    driver = planned(3, max_concurrency=3)
    end(driver, 1, "failed", error_code="BAD")
    assert driver.status == "failed"
    assert {c.key[-1] for c in driver.commands_of(CancelChildExecution)} == {"0", "2"}

    tolerant = planned(3, max_concurrency=1, tolerated_failures=1)
    end(tolerant, 0, "failed", error_code="BAD")
    end(tolerant, 1, output="ok")
    end(tolerant, 2, output="ok too")
    assert tolerant.state is not None
    assert tolerant.state.step("files").structured == {"items": [None, "ok", "ok too"], "failed": 1}


def test_too_many_items_fail_the_step_and_an_empty_list_completes_it() -> None:
    driver = planned(4, max_items=3)
    assert driver.status == "failed" and driver.state is not None
    assert driver.state.error is not None and driver.state.error.code == "FOR_EACH_TOO_MANY_ITEMS"
    assert not starts(driver)
    empty = planned(0)
    assert empty.state is not None and empty.state.step("files").status == "completed"


def test_cancel_stops_the_outstanding_items() -> None:
    driver = planned(10, max_concurrency=3)
    end(driver, 0, output="x")
    driver.send(CancelExecution(now=driver.tick(), by="me"))
    running = {c.key.rsplit("/", 1)[1] for c in driver.commands_of(CancelChildExecution)}
    assert running == {"1", "2", "3"}
    assert len(starts(driver)) == 4  # nothing starts after the cancel


def test_the_hot_state_stays_small_with_1000_items() -> None:
    """Items and results live apart (items.py): what is written back with the execution
    at every item is the counters and the running indexes, whatever the item count."""
    driver = planned(1000, max_concurrency=10, max_items=1000)
    largest = 0
    for index in range(1000):
        end(driver, index, output="o")
        assert driver.state is not None
        if index < 999:  # the completed step holds its output, all the items' answers
            largest = max(largest, len(json.dumps(driver.state.steps["files"].to_dict())))
    assert driver.state is not None and driver.state.step("files").status == "completed"
    assert len(starts(driver)) == 1000
    assert driver.state.step("files").structured == {"items": ["o"] * 1000, "failed": 0}
    assert largest < 400


def test_a_refused_item_start_fails_that_item_instead_of_hanging() -> None:
    """The property test found it: a child start refused for good (CommandRejected on the
    item's key) was ignored, and the execution waited forever with nothing outstanding."""
    from trinity_execution.domain.events import CommandRejected

    driver = planned(3, max_concurrency=1, tolerated_failures=1)
    first = starts(driver)[0]
    driver.send(
        CommandRejected(now=driver.tick(), key=first.key, code="INPUT_INVALID", message="no")
    )
    assert len(starts(driver)) == 2  # the next item started
    end(driver, 1, output="one")
    end(driver, 2, output="two")
    assert driver.step_status("files") == "completed"
    assert driver.state is not None
    assert driver.state.step("files").structured == {"items": [None, "one", "two"], "failed": 1}

    refused_for_good = planned(2, max_concurrency=1)
    key = starts(refused_for_good)[0].key
    refused_for_good.send(
        CommandRejected(now=refused_for_good.tick(), key=key, code="INPUT_INVALID", message="no")
    )
    assert refused_for_good.status == "failed"
