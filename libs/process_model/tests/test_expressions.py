from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity_process_model.expressions import (
    ExpressionError,
    ExpressionLimitExceeded,
    ExpressionSyntaxError,
    UndefinedValueError,
    UnsafeExpressionError,
    compile_condition,
    compile_template,
    condition_source,
)

CONTEXT: dict[str, Any] = {
    "input": {"topic": "quantum", "count": 3},
    "steps": {
        "research": {"output": "findings", "status": "completed", "iteration": 1},
        "review": {
            "output": {"score": 85, "items": ["a", "b"]},
            "decision": "approved",
            "status": "completed",
        },
    },
    "execution": {"id": "e-1"},
    "process": {"name": "content"},
}


@pytest.mark.parametrize(
    ("text", "truth", "seen"),
    [
        ("{{steps.review.output.score}} >= 80", True, "steps.review.output.score=85"),
        ("{{ steps.review.output.score >= 80 }}", True, "steps.review.output.score=85"),
        ("{{ steps.review.output.score }} < 80", False, "steps.review.output.score=85"),
        ("{{steps.review.decision}} == 'approved'", True, "steps.review.decision='approved'"),
        ("{{ steps.review.decision == 'needs_changes' }}", False, None),
        ("steps.review.output.score > 10 and input.count == 3", True, None),
        ("{{ input.count }} + {{ input.count }} == 6", True, "input.count=3"),
        ("{{ steps['review'].output.score > 1 }}", True, None),
        ("{{ 'approved' in steps.review.decision }}", True, None),
    ],
)
def test_conditions_in_both_seed_forms(text: str, truth: bool, seen: str | None) -> None:
    result, value = compile_condition(text).evaluate(CONTEXT)
    assert result is truth
    if seen is not None:
        assert value == seen


def test_condition_without_references_shows_its_result() -> None:
    assert compile_condition("{{ 1 > 2 }}").evaluate({}) == (False, "false")


def test_empty_condition_is_true() -> None:
    assert compile_condition("").evaluate({}) == (True, "")
    assert compile_condition("   ").evaluate({}) == (True, "")


def test_rewrite_of_placeholders() -> None:
    assert condition_source("{{ a.b }}") == "a.b"
    assert condition_source("{{a}} >= {{ b }}") == "(a) >= (b)"


def test_output_attribute_prefers_mapping_items_over_methods() -> None:
    ctx = {"steps": {"x": {"output": {"items": 3, "keys": "k"}}}}
    assert compile_condition("{{ steps.x.output.items == 3 }}").evaluate(ctx)[0]
    assert compile_template("{{ steps.x.output.keys }}").render(ctx) == "k"


def test_template_renders() -> None:
    template = compile_template("Analyze: {{steps.research.output}} about {{ input.topic }}")
    assert template.render(CONTEXT) == "Analyze: findings about quantum"
    assert template.step_refs == {"research"}
    assert template.names == {"steps", "input"}


def test_plain_text_template_is_itself() -> None:
    assert compile_template("hello").render({}) == "hello"


def test_template_loops_and_filters_work() -> None:
    text = "{% for i in steps.review.output['items'] %}{{ i | upper }}{% endfor %}"
    assert compile_template(text).render(CONTEXT) == "AB"


def test_names_exclude_template_variables() -> None:
    text = (
        "{% set n = input.count %}{% for k, v in steps.a.output.items() %}{{ k }}{% endfor %}"
        "{% macro m(x) %}{{ x }}{% endmacro %}{{ m(n) }}"
    )
    assert compile_template(text).names == {"input", "steps"}


def test_compiled_results_are_cached() -> None:
    assert compile_condition("{{ a }} == 1") is compile_condition("{{ a }} == 1")
    assert compile_template("x {{ a }}") is compile_template("x {{ a }}")


def test_step_refs_of_a_condition() -> None:
    cond = compile_condition("{{ steps.a.output }} == {{ steps['b'].status }}")
    assert cond.step_refs == {"a", "b"}


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("{{ nope }}", "nope"),
        ("{{ steps.review.output.missing }}", "missing"),
        ("{{ steps.unknown.output }}", "unknown"),
    ],
)
def test_undefined_names_are_an_error_naming_them(text: str, missing: str) -> None:
    with pytest.raises(UndefinedValueError, match=missing):
        compile_template(text).render(CONTEXT)
    with pytest.raises(UndefinedValueError, match=missing):
        compile_condition(text).evaluate(CONTEXT)


def test_undefined_in_comparison_is_an_error() -> None:
    with pytest.raises(UndefinedValueError):
        compile_condition("{{ steps.review.output.nothing }} >= 80").evaluate(CONTEXT)


@pytest.mark.parametrize("text", ["{{ 1 + }}", "{{ a ", "{% if %}"])
def test_syntax_errors(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        compile_template(text)
    with pytest.raises(ExpressionSyntaxError):
        compile_condition(text)


@pytest.mark.parametrize("text", ["{{ a }} }}", "{% if a %}1{% endif %}", "a ==", "{{ a }} {{"])
def test_condition_syntax_errors(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        compile_condition(text)


INJECTIONS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ lipsum }}",
    "{{ cycler }}",
    "{{ self._TemplateReference__context }}",
    "{{ self }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ [1]|map(attribute='__class__')|list }}",
    "{{ x[('_' ~ '_class__')] }}",
    "{{ config }}",
    "{{ request.application }}",
    "{{ steps.__class__ }}",
    "{{ steps._private }}",
    "{% include '/etc/passwd' %}",
    "{% import 'x' as y %}",
    "{% extends 'base' %}",
    "{{ '{0.__class__}'.format(1) }}",
]


@pytest.mark.parametrize("text", INJECTIONS)
def test_injections_are_refused_before_running(text: str) -> None:
    with pytest.raises(UnsafeExpressionError):
        compile_template(text).render(CONTEXT)
    # Statements are not expressions: a condition refuses them as syntax.
    expected = ExpressionSyntaxError if "{%" in text else UnsafeExpressionError
    with pytest.raises(expected):
        compile_condition(text).evaluate(CONTEXT)


@pytest.mark.parametrize(
    "text",
    ["{{ 'a' * 10000000 }}", "{{ [1] * 10000000 }}", "{{ 10 ** 100000 }}"],
)
def test_unbounded_computations_are_refused(text: str) -> None:
    with pytest.raises(ExpressionLimitExceeded):
        compile_template(text).render({})


def test_runtime_sandbox_refusals_are_unsafe_errors() -> None:
    # A list method that mutates is refused by the immutable sandbox at run time.
    with pytest.raises(UnsafeExpressionError):
        compile_template("{{ steps.review.output['items'].append(1) }}").render(CONTEXT)


def test_error_family() -> None:
    assert issubclass(UnsafeExpressionError, ExpressionError)
    assert issubclass(UndefinedValueError, ExpressionError)
    assert issubclass(ExpressionSyntaxError, ExpressionError)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_any_text_compiles_or_fails_cleanly(text: str) -> None:
    for compile_ in (compile_template, compile_condition):
        try:
            compiled = compile_(text)
        except ExpressionError:
            continue
        try:
            if hasattr(compiled, "render"):
                compiled.render(CONTEXT)
            else:
                compiled.evaluate(CONTEXT)
        except ExpressionError:
            pass
