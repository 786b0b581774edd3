"""Gateways: exclusive, parallel, inclusive; defaults; what the conditions saw."""

from __future__ import annotations

import pytest
from engine_support import Driver, agent, gateway, spec

from trinity_execution.domain import GatewayEvaluated, ProcessFailed, StepSkipped
from trinity_process_model.model import FailureAction, GatewayType, Route


def scored(type_: GatewayType, *routes: Route, **kw: object) -> Driver:
    d = Driver.of(
        spec(
            agent("score"),
            gateway("g", "score", routes=routes, type=type_, **kw),
            agent("high"),
            agent("mid"),
            agent("low"),
            agent("join", "high", "mid", "low"),
        )
    )
    d.start()
    return d


HIGH = Route("high", "{{steps.score.output.value}} >= 80")
MID = Route("mid", "{{ steps.score.output.value >= 50 }}")
LOW = Route("low", is_default=True)


def test_exclusive_takes_the_first_match_in_order() -> None:
    d = scored(GatewayType.EXCLUSIVE, HIGH, MID, LOW)
    d.complete("score", '{"value": 90}')
    fact = d.facts_of(GatewayEvaluated)[0]
    assert fact.selected_targets == ("high",)
    assert [(r.target, r.matched, r.value) for r in fact.routes] == [
        ("high", True, "steps.score.output.value=90"),
        ("mid", False, ""),  # not evaluated: the first match wins
        ("low", False, ""),
    ]
    skipped = {f.step_id: f.reason for f in d.facts_of(StepSkipped)}
    assert skipped == {"mid": "route_not_taken", "low": "route_not_taken"}
    d.complete("high")
    # the join runs: one branch completed, the others were skipped
    assert d.step_status("join") == "running"


def test_exclusive_falls_back_to_default() -> None:
    d = scored(GatewayType.EXCLUSIVE, HIGH, MID, LOW)
    d.complete("score", '{"value": 10}')
    fact = d.facts_of(GatewayEvaluated)[0]
    assert fact.selected_targets == ("low",)
    assert [r.matched for r in fact.routes] == [False, False, True]
    assert fact.routes[1].value == "steps.score.output.value=10"


def test_exclusive_without_match_or_default_fails_no_matching_route() -> None:
    d = scored(GatewayType.EXCLUSIVE, HIGH, MID)
    d.complete("score", '{"value": 10}')
    assert d.status == "failed"
    failed = d.facts_of(ProcessFailed)[0]
    assert (failed.error.code, failed.failed_step_id) == ("NO_MATCHING_ROUTE", "g")


def test_no_match_with_on_failure_continue_skips_the_branches() -> None:
    d = scored(GatewayType.EXCLUSIVE, HIGH, MID, on_failure=FailureAction.CONTINUE)
    d.complete("score", '{"value": 10}')
    assert {f.step_id: f.reason for f in d.facts_of(StepSkipped)} == {
        "high": "upstream_skipped",
        "mid": "upstream_skipped",
    }
    d.complete("low")  # no route leads to it: an entry step
    d.complete("join")
    assert d.status == "completed"


def test_parallel_takes_all_routes_and_joins() -> None:
    d = scored(GatewayType.PARALLEL, HIGH, MID, LOW)
    d.complete("score", "not json")
    assert d.facts_of(GatewayEvaluated)[0].selected_targets == ("high", "mid", "low")
    for step in ("high", "mid"):
        d.complete(step)
        assert d.step_status("join") == "pending"
    d.complete("low")
    assert d.step_status("join") == "running"


def test_inclusive_takes_all_matches() -> None:
    d = scored(GatewayType.INCLUSIVE, HIGH, MID, LOW)
    d.complete("score", '{"value": 85}')
    assert d.facts_of(GatewayEvaluated)[0].selected_targets == ("high", "mid")


def test_inclusive_falls_back_to_default() -> None:
    d = scored(GatewayType.INCLUSIVE, HIGH, MID, LOW)
    d.complete("score", '{"value": 1}')
    assert d.facts_of(GatewayEvaluated)[0].selected_targets == ("low",)


@pytest.mark.parametrize("type_", [GatewayType.EXCLUSIVE, GatewayType.INCLUSIVE])
def test_condition_error_fails_the_gateway(type_: GatewayType) -> None:
    d = scored(type_, Route("high", "{{ steps.score.output.missing > 1 }}"), LOW)
    d.complete("score", '{"value": 1}')
    failed = d.facts_of(ProcessFailed)[0]
    assert failed.error.code == "EXPRESSION_ERROR"
    assert "missing" in failed.error.message


def test_gateway_routes_on_structured_output() -> None:
    d = scored(GatewayType.EXCLUSIVE, HIGH, LOW)
    d.complete("score", "Score: 99", structured={"value": 99})
    assert d.facts_of(GatewayEvaluated)[0].selected_targets == ("high",)
