"""for_each on agent_task and tool_run steps: one work request per item, each answered
only by its own request (item index and attempt in the key), retried per item."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from engine_support import Driver, agent, spec, usd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinity_execution.domain import (
    CancelTimer,
    CancelWork,
    RequestWork,
    StartTimer,
    TimerFired,
    WorkCompleted,
    WorkFailed,
)
from trinity_execution.domain.commands import ToolRunWork
from trinity_execution.domain.events import (
    CancelExecution,
    PauseExecution,
    ResumeExecution,
)
from trinity_execution.domain.items import ForEachState
from trinity_execution.domain.state import ExecutionState
from trinity_process_model.model import (
    ActionKind,
    AgentTaskConfig,
    Budget,
    BudgetAction,
    Money,
    RetryPolicy,
    Step,
    ToolRunConfig,
)

ITEMS = "{{ steps.plan.output.files }}"


def each(retry: RetryPolicy | None = None, **kw: Any) -> Step:
    # An item named "bad" does not render (it has no attribute "nope").
    message = "review {{ item }} at {{ item_index }}{{ '' if item != 'bad' else item.nope }}"
    config = AgentTaskConfig("worker", message, for_each=ITEMS, **kw)
    return Step("files", config, depends_on=("plan",), retry=retry)


def planned(
    count: int,
    budget: Budget | None = None,
    retry: RetryPolicy | None = None,
    bad: frozenset[int] = frozenset(),
    **kw: Any,
) -> Driver:
    extra = {"budget": budget} if budget else {}
    driver = Driver.of(spec(agent("plan"), each(retry, **kw), agent("after", "files"), **extra))
    driver.start()
    files = ", ".join('"bad"' if i in bad else f'"f{i}"' for i in range(count))
    driver.complete("plan", output='{"files": [' + files + "]}")
    return driver


def requests(driver: Driver) -> list[RequestWork]:
    return [
        c
        for c in driver.commands_of(RequestWork)
        if c.correlation is not None and c.correlation.step_id == "files"
    ]


def key_of(driver: Driver, index: int, attempt: int = 1) -> str:
    suffix = f"/item/{index}" if attempt == 1 else f"/item/{index}/{attempt}"
    (command,) = [c for c in requests(driver) if c.key.endswith(suffix)]
    return command.key


def answer(
    driver: Driver, key: str, output: str = "", *, code: str = "", cost: Money | None = None
) -> bool:
    """Send the work service's answer to the request ``key``; True when it was applied."""
    assert driver.state is not None
    st_ = driver.state.step("files")
    common: dict[str, Any] = {
        "now": driver.tick(),
        "step_id": "files",
        "iteration": st_.iteration,
        "attempt": st_.attempt,
        "request": key,
        "cost": cost,
    }
    if code:
        decision = driver.send(WorkFailed(code=code, message="no luck", **common))
    else:
        decision = driver.send(WorkCompleted(output=output, **common))
    return not decision.ignored


def test_one_request_per_item_with_its_own_key_and_outputs_in_item_order() -> None:
    driver = planned(5, max_concurrency=2)
    sent = requests(driver)
    assert [c.payload.message for c in sent] == ["review f0 at 0", "review f1 at 1"]  # type: ignore[union-attr]
    assert len({c.key for c in sent}) == 2
    assert all(c.correlation is not None and c.correlation.attempt == 1 for c in sent)
    for index in (1, 0, 3, 2, 4):  # answers arrive out of order
        assert answer(driver, key_of(driver, index), f'{{"n": {index}}}', cost=usd("0.1"))
    assert driver.state is not None
    step = driver.state.step("files")
    assert step.status == "completed"
    assert step.structured == {"items": [{"n": i} for i in range(5)], "failed": 0}
    assert step.cost == usd("0.5") and driver.state.total_cost == usd("0.5")
    assert driver.work("after")


def test_an_answer_moves_only_the_item_whose_outstanding_request_it_names() -> None:
    driver = planned(3, max_concurrency=3)
    assert driver.state is not None
    before = driver.state.to_dict()
    base = key_of(driver, 0).rpartition("/item/")[0]
    for forged in (
        "",  # no request at all: a for_each step only takes item answers
        base,  # the step's own key
        f"{base}/item/7",  # no such item
        f"{base}/item/1/2",  # an attempt item 1 never made
        f"{base}/item/x",
        key_of(driver, 0).replace("/1/1/item/", "/1/2/item/"),  # another step attempt
    ):
        assert not answer(driver, forged, "forged")
    assert driver.state.to_dict() == before
    assert answer(driver, key_of(driver, 1), "one")
    step = driver.state.step("files")
    assert step.for_each is not None and list(step.for_each.results) == [(1, "one", False)]
    assert not answer(driver, key_of(driver, 1), "again")  # a redelivery changes nothing
    assert list(driver.state.step("files").for_each.results) == [(1, "one", False)]  # type: ignore[union-attr]


def test_a_failed_item_is_retried_by_the_policy_and_a_stale_answer_is_ignored() -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=timedelta(seconds=5))
    driver = planned(2, retry=policy, max_concurrency=2)
    first = key_of(driver, 1)
    assert answer(driver, first, code="AGENT_UNAVAILABLE")
    (timer,) = driver.commands_of(StartTimer)[-1:]
    assert timer.timer_id == f"{first}/retry_backoff" and timer.purpose == "retry_backoff"
    assert not answer(driver, first, "late")  # the failed attempt is over
    driver.clock = timer.fire_at
    assert not driver.send(TimerFired(now=driver.clock, timer_id=timer.timer_id)).ignored
    second = key_of(driver, 1, attempt=2)
    assert not answer(driver, first, "stale")
    assert answer(driver, key_of(driver, 0), "zero")
    assert answer(driver, second, "one")
    assert driver.state is not None
    assert driver.state.step("files").structured == {"items": ["zero", "one"], "failed": 0}
    fired_again = driver.send(TimerFired(now=driver.tick(), timer_id=timer.timer_id))
    assert fired_again.ignored


def test_tolerated_failures_go_on_and_one_more_fails_the_step_and_cancels_the_rest() -> None:
    tolerant = planned(3, max_concurrency=1, tolerated_failures=1)
    assert answer(tolerant, key_of(tolerant, 0), code="AGENT_UNAVAILABLE")
    assert answer(tolerant, key_of(tolerant, 1), "b")
    assert answer(tolerant, key_of(tolerant, 2), "c")
    assert tolerant.state is not None
    assert tolerant.state.step("files").structured == {"items": [None, "b", "c"], "failed": 1}

    strict = planned(3, max_concurrency=3)
    assert answer(strict, key_of(strict, 1), code="TOOL_FAILED")
    assert strict.status == "failed" and strict.state is not None
    error = strict.state.step("files").error
    assert error is not None and error.code == "FOR_EACH_ITEM_FAILED" and "item 1" in error.message
    assert {c.key for c in strict.commands_of(CancelWork)} == {key_of(strict, 0), key_of(strict, 2)}


def test_cancel_cancels_the_outstanding_items_work_and_retry_timers() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=timedelta(seconds=5))
    driver = planned(10, retry=policy, max_concurrency=3)
    assert answer(driver, key_of(driver, 0), "a")  # item 3 starts
    assert answer(driver, key_of(driver, 1), code="AGENT_UNAVAILABLE")  # item 1 backs off
    driver.send(CancelExecution(now=driver.tick(), by="me"))
    assert driver.status == "cancelled"
    cancelled = {c.key for c in driver.commands_of(CancelWork)}
    assert cancelled == {key_of(driver, 2), key_of(driver, 3)}
    assert [c.timer_id for c in driver.commands_of(CancelTimer) if "/item/" in c.timer_id] == [
        f"{key_of(driver, 1)}/retry_backoff"
    ]
    assert len(requests(driver)) == 4  # nothing starts after the cancel


def test_a_retry_due_while_paused_waits_for_the_resume() -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=timedelta(seconds=5))
    driver = planned(1, retry=policy)
    assert answer(driver, key_of(driver, 0), code="AGENT_UNAVAILABLE")
    timer = driver.commands_of(StartTimer)[-1]
    driver.send(PauseExecution(now=driver.tick(), by="me"))
    driver.send(TimerFired(now=timer.fire_at, timer_id=timer.timer_id))
    assert len(requests(driver)) == 1
    driver.send(ResumeExecution(now=driver.tick(), by="me"))
    assert requests(driver)[-1].key == key_of(driver, 0, attempt=2)
    assert answer(driver, key_of(driver, 0, attempt=2), "done")
    assert driver.step_status("files") == "completed"


def test_money_a_failed_item_spent_counts_and_the_budget_stops_the_items() -> None:
    driver = planned(4, Budget(usd(1), BudgetAction.FAIL), max_concurrency=4, tolerated_failures=4)
    assert answer(driver, key_of(driver, 0), code="BUDGET_EXCEEDED", cost=usd("0.6"))
    assert driver.state is not None and driver.state.total_cost == usd("0.6")
    assert answer(driver, key_of(driver, 1), "b", cost=usd("0.6"))
    assert driver.status == "failed" and driver.state.error is not None
    assert driver.state.error.code == "BUDGET_EXCEEDED"
    assert {c.key for c in driver.commands_of(CancelWork)} == {key_of(driver, i) for i in (2, 3)}


def test_a_tool_run_body_renders_its_arguments_per_item_and_a_bad_item_fails_alone() -> None:
    config = ToolRunConfig(
        ActionKind.VERIFY,
        {"path": "{{ item.path }}", "at": "{{ item_index }}"},
        for_each="{{ input.files }}",
        tolerated_failures=1,
    )
    driver = Driver.of(spec(Step("files", config)))
    driver.start(files=[{"path": "a"}, {"nope": 1}, {"path": "c"}])
    sent = requests(driver)
    assert [c.payload for c in sent] == [
        ToolRunWork(ActionKind.VERIFY, {"path": "a", "at": "0"}),
        ToolRunWork(ActionKind.VERIFY, {"path": "c", "at": "2"}),
    ]
    assert answer(driver, sent[0].key, "A") and answer(driver, sent[1].key, "C")
    assert driver.state is not None
    assert driver.state.step("files").structured == {"items": ["A", None, "C"], "failed": 1}
    assert driver.status == "completed"


# ------------------------------------------------------------------ property


@st.composite
def scripts(
    draw: st.DrawFn,
) -> tuple[int, frozenset[int], int, int, int, bool, list[tuple[str, int]]]:
    count = draw(st.integers(0, 12))
    bad = frozenset(draw(st.sets(st.integers(0, max(count - 1, 0)), max_size=4)) if count else ())
    concurrency = draw(st.integers(1, 4))
    tolerated = draw(st.integers(0, 3))
    attempts = draw(st.integers(1, 3))
    moves = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["complete", "fail", "forge", "stale", "fire"]),
                st.integers(0, 11),
            ),
            max_size=80,
        )
    )
    return count, bad, concurrency, tolerated, attempts, draw(st.booleans()), moves


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts())
def test_items_are_answered_only_by_their_own_request_and_outputs_keep_item_order(
    script: tuple[int, frozenset[int], int, int, int, bool, list[tuple[str, int]]],
) -> None:
    """Whatever the order of answers, failures, retries and forged or stale answers: at
    most max_concurrency items are outstanding, every request key is used once, an
    answer naming no outstanding item attempt changes nothing, the step never waits
    with nothing outstanding, and the output lists each item's own answer at its own
    index. ``cold``: each decision is given only what the store would load."""
    count, bad, concurrency, tolerated, attempts, cold, moves = script
    policy = RetryPolicy(max_attempts=attempts, initial_backoff=timedelta(seconds=1))
    driver = planned(
        count, retry=policy, bad=bad, max_concurrency=concurrency, tolerated_failures=tolerated
    )
    store = ColdStore()
    answered: dict[int, str] = {}
    for move, pick in moves:
        assert driver.state is not None
        step = driver.state.step("files")
        if cold and step.for_each is not None:
            store.save(driver.state)
            driver.state = store.load(driver.state)
            step = driver.state.step("files")
        each_ = step.for_each
        if driver.status != "running" or each_ is None or step.status != "waiting":
            break
        assert each_.running or each_.wants_all  # never waits with nothing outstanding
        outstanding = sorted(set(each_.running) - set(each_.backoff))
        assert len(each_.running) <= concurrency
        keys = [c.key for c in requests(driver)]
        assert len(keys) == len(set(keys))
        before = driver.state.to_dict()
        if move == "fire":
            timers = [c for c in driver.commands_of(StartTimer) if c.correlation.step_id == "files"]
            if timers:
                timer = timers[pick % len(timers)]
                driver.send(
                    TimerFired(now=max(driver.clock, timer.fire_at), timer_id=timer.timer_id)
                )
            continue
        if not outstanding:
            continue
        index = outstanding[pick % len(outstanding)]
        current = key_of(driver, index, each_.attempts.get(index, 1))
        if move in ("forge", "stale"):
            other = [i for i in range(count) if i != index]
            forged = (
                f"{current}/9"
                if move == "forge" or not other
                else current.replace(f"/item/{index}", f"/item/{other[pick % len(other)]}/7")
            )
            assert not answer(driver, forged, "forged")
            assert driver.state.to_dict() == before
        elif move == "complete":
            assert answer(driver, current, f"out {index}")
            answered[index] = f"out {index}"
        else:
            assert answer(driver, current, code="AGENT_UNAVAILABLE")
    assert driver.state is not None
    step = driver.state.step("files")
    if step.status == "completed":
        assert step.structured is not None
        outputs = step.structured["items"]
        assert len(outputs) == count
        for index, output in enumerate(outputs):
            assert output == answered.get(index)


# ---------------------------------------------------- what a decision is given


class ColdStore:
    """What the execution service's item store does around each decision: it keeps the
    items and results apart and gives a decision only what ``wanted_items`` and
    ``wants_results`` ask for (infrastructure/item_store.py against the database)."""

    def __init__(self) -> None:
        self.items: dict[int, Any] = {}
        self.results: list[tuple[int, Any, bool]] = []

    def save(self, state: ExecutionState) -> None:
        each = state.step("files").for_each
        assert each is not None
        if not each.saved_items:
            self.items = {i: each.items[i] for i in range(each.total)}
        self.results.extend(each.unsaved_results())

    def load(self, state: ExecutionState) -> ExecutionState:
        data = state.to_dict()
        hot = data["steps"]["files"]["for_each"]
        each = ForEachState.from_dict(hot)
        wanted = range(each.total) if each.wants_all else each.wanted_items()
        hot["loaded_items"] = [[i, self.items[i]] for i in wanted]
        if each.wants_results():
            hot["loaded_results"] = [list(r) for r in self.results]
        return ExecutionState.from_dict(data)


def test_a_decision_lacking_items_or_results_asks_for_a_full_load() -> None:
    config = ToolRunConfig(
        ActionKind.VERIFY,
        {"path": "{{ item.path }}"},
        for_each="{{ input.files }}",
        max_concurrency=1,
        tolerated_failures=2,
    )
    driver = Driver.of(spec(Step("files", config)))
    driver.start(files=[{"path": "a"}, {"bad": 1}, {"bad": 2}])
    store = ColdStore()
    assert driver.state is not None
    store.save(driver.state)
    driver.state = store.load(driver.state)
    (first,) = requests(driver)
    assert answer(driver, first.key, "A")  # item 1 fails to render; item 2 is not loaded
    load = driver.commands_of(StartTimer)[-1]
    assert load.purpose == "for_each_load" and load.fire_at == driver.clock
    assert driver.step_status("files") == "waiting"
    store.save(driver.state)
    driver.state = store.load(driver.state)
    assert not driver.send(TimerFired(now=driver.tick(), timer_id=load.timer_id)).ignored
    assert driver.state.step("files").structured == {"items": ["A", None, None], "failed": 2}
    assert driver.status == "completed"
    assert driver.send(TimerFired(now=driver.tick(), timer_id=load.timer_id)).ignored
