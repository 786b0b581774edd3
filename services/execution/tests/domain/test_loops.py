"""Loops: new iterations, limits, default exits, nesting, bounded history."""

from __future__ import annotations

from engine_support import Driver, agent, gateway, spec

from trinity_execution.domain import CancelWork, StepFailed, StepStarted
from trinity_execution.domain.state import HISTORY_LIMIT
from trinity_process_model.model import Route


def until_green(max_iterations: int, *, exit_default: bool) -> Driver:
    routes = [Route("build", "{{ steps.verify.output != 'green' }}", max_iterations=max_iterations)]
    exit_step = "escalate" if exit_default else "ship"
    if exit_default:
        routes.append(Route("escalate", is_default=True))
    else:
        routes.append(Route("ship", "{{ steps.verify.output == 'green' }}"))
    return Driver.of(
        spec(
            agent("build"),
            agent("verify", "build"),
            gateway("check", "verify", routes=routes),
            agent(exit_step),
        )
    )


def iterations(d: Driver, step: str) -> list[int]:
    return [f.iteration for f in d.facts_of(StepStarted) if f.step_id == step]


def test_iterate_until_green() -> None:
    d = until_green(5, exit_default=False)
    d.start()
    for _ in range(2):
        d.complete("build")
        d.complete("verify", "red")
    d.complete("build")
    d.complete("verify", "green")
    d.complete("ship")
    assert d.status == "completed"
    assert iterations(d, "build") == [1, 2, 3]
    assert d.state is not None
    assert [h["output"] for h in d.state.step("verify").history] == ["red", "red"]


def test_limit_exits_by_the_default_route() -> None:
    d = until_green(2, exit_default=True)
    d.start()
    d.complete("build")
    d.complete("verify", "red")  # loop → iteration 2
    d.complete("build")
    d.complete("verify", "red")  # limit reached: default route
    assert iterations(d, "build") == [1, 2]
    # escalate hangs below the loop's target: it is in the body, so in iteration 2 too
    assert iterations(d, "escalate") == [2]
    d.complete("escalate")
    assert d.status == "completed"


def test_history_stays_bounded() -> None:
    d = until_green(50, exit_default=False)
    d.start()
    for _ in range(HISTORY_LIMIT + 10):
        d.complete("build", "x" * 10_000)
        d.complete("verify", "red")
    assert d.state is not None
    build = d.state.step("build")
    assert build.iteration == HISTORY_LIMIT + 11
    assert len(build.history) == HISTORY_LIMIT
    # the oldest ten are counted, not kept; each kept one says its output was cut
    assert build.history_dropped == 10 and build.history[0]["iteration"] == 11
    assert all(len(h["output"]) <= 2_000 and h["output_truncated"] for h in build.history)
    assert all(h["started_at"] and h["ended_at"] and h["attempt"] == 1 for h in build.history)
    assert len(str(d.state.to_dict())) < 150_000


def test_loop_cancels_outstanding_work_in_the_body() -> None:
    d = Driver.of(
        spec(
            agent("a"),
            agent("slow", "a"),
            agent("check", "a"),
            gateway("g", "check", routes=[Route("a", "{{ true }}", max_iterations=3)]),
            agent("x", "slow"),
        )
    )
    d.start()
    d.complete("a")
    slow_key = d.work("slow").key
    d.complete("check")  # loops back while slow still runs
    assert CancelWork(slow_key, "") in d.commands
    assert any(
        f.step_id == "slow" and f.error.code == "LOOP_RESTARTED" for f in d.facts_of(StepFailed)
    )
    assert iterations(d, "a") == [1, 2]
    late = d.send(d.events[-1].__class__(**{**d.events[-1].__dict__, "step_id": "slow"}))
    assert late.ignored


def test_nested_loop_counters_restart_with_the_outer_iteration() -> None:
    d = Driver.of(
        spec(
            agent("outer_start"),
            agent("inner_work", "outer_start"),
            gateway(
                "inner",
                "inner_work",
                routes=[
                    Route(
                        "inner_work", "{{ steps.inner_work.output == 'again' }}", max_iterations=2
                    ),
                    Route("outer", is_default=True),
                ],
            ),
            gateway(
                "outer",
                routes=[
                    Route(
                        "outer_start", "{{ steps.inner_work.output == 'again' }}", max_iterations=2
                    ),
                    Route("done", is_default=True),
                ],
            ),
            agent("done"),
        )
    )
    d.start()
    d.complete("outer_start")
    d.complete("inner_work", "again")  # inner loop 1 → inner_work iteration 2
    d.complete("inner_work", "again")  # inner limit → default → outer; outer loops
    assert iterations(d, "outer_start") == [1, 2]
    d.complete("outer_start")
    d.complete("inner_work", "again")  # inner counter started over: loops again
    assert len(iterations(d, "inner_work")) == 4
    d.complete("inner_work", "again")  # inner limit; outer limit → done
    d.complete("done")
    assert d.status == "completed"
