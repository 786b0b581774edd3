"""Hostile conditions and templates meet hard limits (issue 18 §1, invariant 8).

Each attack below would take minutes, gigabytes or both without the limits; each
must end quickly with ExpressionLimitExceeded naming the limit that stopped it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from trinity_process_model.expressions import (
    ExpressionLimitExceeded,
    ExpressionLimits,
    compile_condition,
    compile_template,
    configure_limits,
)
from trinity_process_model.sandbox import current_limits

CONTEXT = {"input": {"n": 20000, "big": 9, "s": "x" * 1000}, "steps": {}}

RUNTIME_ATTACKS = [
    # nested loops over ranges (20000 by 20000 iterations)
    ("{% for i in range(input.n) %}{% for j in range(input.n) %}.{% endfor %}{% endfor %}", None),
    # nested loops over strings built within the repetition limit
    ("{% for a in input.s * 100 %}{% for b in input.s * 100 %}{% endfor %}{% endfor %}", None),
    # a power tower through variables: each step is allowed, the result is not
    ("{% set a = input.big ** 1000 %}{% set b = a ** 100 %}{{ b }}", "integer_size"),
    ("{{ (input.big ** 1000) * (input.big ** 1000) * (input.big ** 1000) }}", "integer_size"),
    # strings of 10^10 characters
    ("{{ (input.s * 1000) | replace('x', input.s * 1000) }}", "length"),
    ("{{ ([input.s * 1000] * 1000) | join }}", "length"),
    ("{{ [input.s * 1000] * 1000 }}", "length"),
    ("{{ (input.s * 1000) | indent(input.n * 1000) }}", "length"),
    ("{{ input.s.center(input.n * 1000000) }}", "length"),
    ("{{ '%0999999999d' % 1 }}", "length"),
    ("{{ '{:>999999999}'.format(1) }}", "length"),
    (
        "{% set a = input.s * 1000 %}{% set a = a ~ a %}{% set a = a ~ a %}"
        "{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{{ a }}",
        "length",
    ),
    # exponential recursion through a macro
    (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
        "operations",
    ),
    # printing a huge output of a loop
    ("{% for i in range(99999) %}{{ input.s }}{% endfor %}", "length"),
]


@pytest.mark.parametrize(("text", "limit"), RUNTIME_ATTACKS)
def test_hostile_templates_stop_at_a_limit(text: str, limit: str | None) -> None:
    before = current_limits()
    if limit is not None:
        # The named limit counts work, not time: take the wall-clock deadline out of
        # the race so that a loaded machine cannot make it fire first.
        configure_limits(dataclasses.replace(before, deadline_seconds=3600))
    try:
        with pytest.raises(ExpressionLimitExceeded) as stopped:
            compile_template(text).render(CONTEXT)
    finally:
        configure_limits(before)
    if limit is not None:
        assert stopped.value.limit == limit, stopped.value
    else:
        assert stopped.value.limit in ("operations", "deadline")


def test_hostile_conditions_stop_at_a_limit() -> None:
    with pytest.raises(ExpressionLimitExceeded) as stopped:
        compile_condition("{{ (input.big ** 4000) > 1 }}").evaluate(CONTEXT)
    assert stopped.value.limit == "integer_size"
    with pytest.raises(ExpressionLimitExceeded):
        compile_condition("{{ range(input.n * input.n) | list | length > 1 }}").evaluate(CONTEXT)


STATIC_ATTACKS = [
    "{% for i in range(20000000) %}x{% endfor %}",
    "{{ 9 ** 9 ** 9 }}",
    "{{ (9 ** 9) ** 9 }}",
    "{{ 10 ** 100000 }}",
    "{{ 'x' * 10000000000 }}",
]


@pytest.mark.parametrize("text", STATIC_ATTACKS)
def test_visible_attacks_are_refused_without_running(text: str) -> None:
    with pytest.raises(ExpressionLimitExceeded):
        compile_template(text)


def test_ordinary_templates_still_work() -> None:
    context = {"input": {"items": [1, 2, 3], "topic": "news"}, "steps": {}}
    text = (
        "{% for i in range(3) %}{{ i }}{% endfor %} {{ input.items | join(',') }} "
        "{{ input.topic | upper }} {{ 2 ** 10 }} {{ 'ab' ~ 'cd' }} {{ '%05d' % 42 }}"
    )
    assert compile_template(text).render(context) == "012 1,2,3 NEWS 1024 abcd 00042"
    assert compile_condition("{{ input.items | sum > 5 }}").evaluate(context)[0]


@pytest.fixture
def tight_limits() -> Iterator[ExpressionLimits]:
    before = current_limits()
    limits = ExpressionLimits(max_operations=50, max_length=100, deadline_seconds=5)
    configure_limits(limits)
    yield limits
    configure_limits(before)


def test_limits_are_configurable(tight_limits: ExpressionLimits) -> None:
    with pytest.raises(ExpressionLimitExceeded) as stopped:
        compile_template("{% for i in range(input.n) %}{% endfor %}").render({"input": {"n": 60}})
    assert stopped.value.limit == "operations"
    with pytest.raises(ExpressionLimitExceeded) as too_long:
        compile_template("{{ 'x' * 101 }}").render({})
    assert too_long.value.limit == "length"
    assert compile_template("{% for i in range(40) %}{% endfor %}ok").render({}) == "ok"


def test_the_deadline_stops_a_slow_render() -> None:
    before = current_limits()
    configure_limits(ExpressionLimits(max_operations=10**9, deadline_seconds=0.05))
    try:
        with pytest.raises(ExpressionLimitExceeded) as stopped:
            compile_template(
                "{% for i in range(10**8) %}{{ i }}{% endfor %}".replace("10**8", "100000000")
            ).render({})
    finally:
        configure_limits(before)
    assert stopped.value.limit in ("deadline", "length")


def test_limits_from_the_environment() -> None:
    limits = ExpressionLimits.from_env(
        {"TRINITY_EXPRESSION_MAX_OPERATIONS": "500", "TRINITY_EXPRESSION_DEADLINE_SECONDS": "0.5"}
    )
    assert limits.max_operations == 500 and limits.deadline_seconds == 0.5
    assert limits.max_length == ExpressionLimits().max_length
    with pytest.raises(ValueError, match="TRINITY_EXPRESSION_MAX_LENGTH"):
        ExpressionLimits.from_env({"TRINITY_EXPRESSION_MAX_LENGTH": "lots"})
    with pytest.raises(ValueError, match="positive"):
        ExpressionLimits.from_env({"TRINITY_EXPRESSION_MAX_OPERATIONS": "0"})


def test_the_readme_shows_the_settings_and_their_defaults() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    defaults = ExpressionLimits()
    for field, variable in ExpressionLimits.ENV.items():
        value = getattr(defaults, field)
        shown = str(int(value)) if value == int(value) else str(value)
        assert f"| `{variable}` | `{shown}` |" in readme, variable


def test_range_is_no_context_name() -> None:
    from trinity_process_model.expressions import check_template

    assert check_template("{% for i in range(input.n) %}{% endfor %}").names == {"input"}
