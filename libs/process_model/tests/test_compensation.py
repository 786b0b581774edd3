"""``compensate:`` on a step: parsing, validation, the contract, writing back."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trinity_process_model.authoring import AuthoringError, dump_process, parse_process
from trinity_process_model.model import (
    ActionKind,
    Compensation,
    NotificationConfig,
    RetryPolicy,
    ToolRunConfig,
)
from trinity_process_model.proto_codec import spec_from_proto, spec_to_proto
from trinity_process_model.validation import validate

SAGA = """\
name: saga
steps:
  - id: reserve
    tool_run:
      action: scaffold
    compensate:
      tool_run:
        action: publish
        arguments: {undo: "{{ step.output.id }} of {{ steps.reserve.iteration }}"}
      retry: {max_attempts: 3}
      timeout: 90s
  - id: tell
    depends_on: [reserve]
    notification: {channel: file, target: a.txt, message: hi}
    compensate:
      notification: {channel: file, target: a.txt, message: "undo {{ step.text }}"}
"""


def test_a_compensation_parses_validates_and_round_trips() -> None:
    spec = parse_process(SAGA)
    assert spec.steps[0].compensate == Compensation(
        ToolRunConfig(
            ActionKind.PUBLISH, {"undo": "{{ step.output.id }} of {{ steps.reserve.iteration }}"}
        ),
        RetryPolicy(max_attempts=3),
        timedelta(seconds=90),
    )
    assert spec.steps[1].compensate == Compensation(
        NotificationConfig(
            channel=spec.steps[1].compensate.config.channel,
            target="a.txt",  # type: ignore[union-attr]
            message="undo {{ step.text }}",
        ),
    )
    assert validate(spec) == []
    assert spec_from_proto(spec_to_proto(spec)) == spec
    assert parse_process(dump_process(spec)) == spec
    assert "compensate:" in dump_process(spec)


def _problems(text: str) -> list[str]:
    try:
        return [str(v) for v in validate(parse_process(text))]
    except AuthoringError as error:
        return [str(v) for v in error.violations]


@pytest.mark.parametrize(
    ("compensate", "problem"),
    [
        (
            "{timer: {duration: 1s}}",
            "steps[0].compensate.timer: unknown key 'timer'",
        ),
        ("{}", "steps[0].compensate: a compensation has exactly one of"),
        (
            "{tool_run: {action: publish}, notification: {channel: file, target: a, message: b}}",
            "found tool_run and notification",
        ),
        (
            "{agent_task: {agent: bob, message: '{{ nope }}'}}",
            "steps[0].compensate.agent_task.message: reads 'nope'",
        ),
        (
            "{agent_task: {agent: bob, message: '{{ steps.ghost.output }}'}}",
            "reads steps.ghost, but there is no step 'ghost'",
        ),
        ("{agent_task: {agent: bob, message: '{{ '}}", "steps[0].compensate.agent_task.message"),
        ("{agent_task: {agent: ' ', message: m}}", "the agent name is required"),
        ("{tool_run: {action: publish}, retry: {max_attempts: 0}}", "max_attempts"),
        (
            "{tool_run: {action: publish}, timeout: soon}",
            "steps[0].compensate.timeout: bad duration",
        ),
        ("{tool_run: {action: publish}, timeout: 0s}", "steps[0].compensate.timeout"),
        (
            "{tool_run: {action: publish, for_each: '{{ [1] }}'}}",
            "steps[0].compensate.tool_run.for_each: a compensation undoes one completion",
        ),
        (
            "{tool_run: {action: publish}, retry: {initial_backoff: 1m, max_backoff: 1s}}",
            "steps[0].compensate.retry.max_backoff",
        ),
    ],
)
def test_bad_compensations_are_refused(compensate: str, problem: str) -> None:
    text = (
        "name: p\nsteps:\n  - id: a\n    tool_run: {action: scaffold}\n"
        f"    compensate: {compensate}\n"
    )
    problems = _problems(text)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(
    "kind",
    [
        "timer: {duration: 1s}",
        "human_approval: {approvers: [a@b.org]}\n    timeout: 1h",
        "wait_for_message: {message: m, correlation_key: k}",
    ],
)
def test_steps_that_change_nothing_cannot_declare_a_compensation(kind: str) -> None:
    text = (
        f"name: p\nsteps:\n  - id: a\n    {kind}\n"
        "    compensate: {tool_run: {action: publish}}\n"
    )
    problems = _problems(text)
    assert any(p.startswith("steps[0].compensate: a ") and "changes nothing" in p for p in problems)


def test_only_compensations_read_step() -> None:
    text = "name: p\nsteps:\n  - id: a\n    agent_task: {agent: b, message: '{{ step.output }}'}\n"
    assert any("reads 'step'" in p for p in _problems(text))


def test_a_contract_compensation_without_kind_is_refused() -> None:
    message = spec_to_proto(parse_process(SAGA))
    message.steps[0].compensate.ClearField("tool_run")
    with pytest.raises(AuthoringError) as caught:
        spec_from_proto(message)
    assert "steps[0].compensate" in str(caught.value)
