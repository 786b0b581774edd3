"""Readiness, joins, conditions and skip propagation."""

from __future__ import annotations

from engine_support import Driver, agent, spec

from trinity_execution.domain import ProcessCompleted, StepSkipped, StepStarted
from trinity_process_model.model import FailureAction


def started(d: Driver) -> list[str]:
    return [f.step_id for f in d.facts_of(StepStarted)]


def test_entry_steps_start_together_and_a_join_waits_for_all() -> None:
    d = Driver.of(spec(agent("a"), agent("b"), agent("c", "a", "b")))
    d.start(topic="t")
    assert started(d) == ["a", "b"]
    d.complete("a")
    assert started(d) == ["a", "b"]
    d.complete("b")
    assert started(d) == ["a", "b", "c"]


def test_false_condition_skips_and_the_skip_propagates() -> None:
    d = Driver.of(
        spec(
            agent("a"),
            agent("b", "a", condition="{{ steps.a.output }} == 'go'"),
            agent("c", "b"),
            agent("d", "c"),
        )
    )
    d.start(topic="t")
    d.complete("a", "stop")
    assert [(f.step_id, f.reason) for f in d.facts_of(StepSkipped)] == [
        ("b", "condition_not_met"),
        ("c", "upstream_skipped"),
        ("d", "upstream_skipped"),
    ]
    assert d.status == "completed"


def test_condition_on_input() -> None:
    d = Driver.of(spec(agent("a", condition="{{ input.count > 2 }}")))
    d.start(count=3)
    assert started(d) == ["a"]


def test_join_with_one_branch_skipped_still_runs() -> None:
    d = Driver.of(
        spec(
            agent("a"),
            agent("b", "a", condition="{{ false }}"),
            agent("c", "a"),
            agent("join", "b", "c"),
        )
    )
    d.start(topic="t")
    d.complete("a")
    d.complete("c")
    assert "join" in started(d)


def test_condition_error_fails_the_step_without_starting_it() -> None:
    d = Driver.of(spec(agent("a", condition="{{ input.nothing }} == 1")))
    d.start()
    assert started(d) == []
    assert d.status == "failed"
    assert d.state is not None and d.state.error is not None
    assert d.state.error.code == "EXPRESSION_ERROR"
    assert "nothing" in d.state.error.message


def test_failed_step_with_continue_lets_dependents_run() -> None:
    d = Driver.of(
        spec(
            agent("a", on_failure=FailureAction.CONTINUE),
            agent("b", "a", message="a was {{ steps.a.status }}"),
        )
    )
    d.start(topic="t")
    d.fail("a")
    assert d.work("b").payload.message == "a was failed"  # type: ignore[union-attr]
    d.complete("b")
    assert d.facts_of(ProcessCompleted)


def test_template_render_error_fails_the_step() -> None:
    d = Driver.of(spec(agent("a", message="{{ steps.nope.output }}")))
    d.start()
    assert d.status == "failed"
    assert d.state is not None and d.state.failed_step_id == "a"


def test_empty_process_completes_at_once() -> None:
    d = Driver.of(spec())
    d.start()
    assert d.status == "completed"


def test_context_exposes_steps_fields() -> None:
    d = Driver.of(
        spec(
            agent("a"),
            agent(
                "b",
                "a",
                message=(
                    "{{ steps.a.output.n }}|{{ steps.a.status }}|{{ steps.a.iteration }}"
                    "|{{ steps.a.cost }}|{{ execution.id }}|{{ process.name }}|{{ steps.b.status }}"
                ),
            ),
        )
    )
    d.start()
    from engine_support import usd

    d.complete("a", '{"n": 3}', cost=usd("0.5"))
    assert d.work("b").payload.message == "3|completed|1|0.5|ex-1|test|pending"  # type: ignore[union-attr]
