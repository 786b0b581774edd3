"""A template or condition past its limits fails its step with EXPRESSION_LIMIT_EXCEEDED,
naming the limit, the step and the field (issue 18 §1)."""

from __future__ import annotations

from engine_support import Driver, agent, approval, gateway, spec

from trinity_execution.domain import ProcessFailed
from trinity_process_model.model import Route

NESTED = "{% for i in range(input.n) %}{% for j in range(input.n) %}{% endfor %}{% endfor %}"


def test_a_hostile_message_fails_the_step_and_names_the_limit() -> None:
    d = Driver.of(spec(agent("a", message=NESTED), agent("b", "a")))
    d.start(n=20000)
    assert d.status == "failed"
    assert d.state is not None
    error = d.state.step("a").error
    assert error is not None and error.code == "EXPRESSION_LIMIT_EXCEEDED"
    assert error.details == {"step_id": "a", "field": "agent_task.message", "limit": "operations"}
    assert "agent_task.message of step 'a'" in error.message
    assert d.state.step("b").skip_reason == "upstream_failed"
    assert d.state.step("a").attempt == 1  # never retried


def test_a_hostile_condition_and_route_and_title() -> None:
    power = "{{ (input.n ** 1000) > 1 }}"
    d = Driver.of(spec(agent("a", condition=power)))
    d.start(n=20000)
    error = d.facts_of(ProcessFailed)[0].error
    assert (error.code, error.details["field"], error.details["limit"]) == (
        "EXPRESSION_LIMIT_EXCEEDED",
        "condition",
        "integer_size",
    )

    d = Driver.of(spec(agent("a"), gateway("g", "a", routes=(Route("b", power),)), agent("b")))
    d.start(n=20000)
    d.complete("a")
    error = d.facts_of(ProcessFailed)[0].error
    assert error.details["step_id"] == "g"
    assert error.details["field"].startswith("gateway.routes[0].condition")

    d = Driver.of(spec(approval("r", title="{{ input.s * 1000 }}{{ input.s * 1000 }}" * 2)))
    d.start(s="x" * 1000)  # 4,000,000 characters, over the length limit
    error = d.facts_of(ProcessFailed)[0].error
    assert (error.details["field"], error.details["limit"]) == ("human_approval.title", "length")
