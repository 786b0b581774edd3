"""Hostile process texts: refused with a clear problem, in bounded time, never a crash.

The crash cases run in a child interpreter: before the limits, libyaml's composer
overflowed the C stack on 50,000 nested ``{`` and the process died with SIGSEGV, which
inside pytest would take the whole run down instead of failing one test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from trinity_process_model.authoring import AuthoringError, parse_process
from trinity_process_model.text_limits import MAX_NESTING, MAX_TEXT_CHARS

ATTACKS = {
    "flow mappings": "{" * 50_000,
    "flow lists in a mapping": "name: x\nsteps: " + "[" * 50_000,
    "compact block lists": "- " * 50_000 + "x",
    "complex keys": "? " * 50_000 + "x",
    "json lists": "[" * 50_000 + "]" * 50_000,
    "json objects": '{"a":' * 50_000 + "1" + "}" * 50_000,
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_deep_nesting_is_refused_without_crashing_the_process(name: str) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        from trinity_process_model.authoring import AuthoringError, parse_process
        text = json.loads(sys.stdin.read())
        for fmt in (None, "yaml", "json"):
            try:
                parse_process(text, fmt)
            except AuthoringError as error:
                print(error.violations[0].description)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(ATTACKS[name]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    # The nesting is named where the parser got that far; JSON read as JSON is a syntax error
    # at worst, never a crash.
    assert any(f"nests deeper than {MAX_NESTING} levels" in line for line in lines), lines


def test_nesting_up_to_the_limit_is_read() -> None:
    # root, triggers, the trigger, schedule and input are five levels.
    inner = "[" * (MAX_NESTING - 5) + "1" + "]" * (MAX_NESTING - 5)
    text = f"name: deep\ntriggers:\n  - schedule: {{cron: '* * * * *', input: {{x: {inner}}}}}\n"
    with pytest.raises(AuthoringError) as caught:
        parse_process(text)
    # Read (the 32-level input limit speaks, not the text limit).
    assert all("nests deeper than 64" not in v.description for v in caught.value.violations)
    too_deep = text.replace(inner, "[" + inner + "]")
    with pytest.raises(AuthoringError, match=f"nests deeper than {MAX_NESTING} levels"):
        parse_process(too_deep)


def test_json_depth_scan_skips_brackets_inside_strings() -> None:
    description = "[" * 500 + '\\"{' * 100
    spec = {"name": "x", "description": description, "steps": []}
    assert parse_process(json.dumps(spec), "json").description == description


def test_text_longer_than_the_limit_is_refused_before_parsing() -> None:
    text = "name: big\ndescription: " + "x" * MAX_TEXT_CHARS
    with pytest.raises(AuthoringError, match="at most 1,000,000 are accepted"):
        parse_process(text)


def test_schedule_input_nests_as_deep_as_the_services_accept_and_no_deeper() -> None:
    """The input's depth limit is the platform's Struct limit: a spec written as text and
    the same spec sent as a message are refused alike."""
    from trinity_platform.request_checks import MAX_STRUCT_DEPTH, message_violations
    from trinity_process_model.proto_codec import spec_to_proto
    from trinity_process_model.validation import MAX_INPUT_DEPTH, validate

    assert MAX_INPUT_DEPTH == MAX_STRUCT_DEPTH

    def text(levels: int) -> str:  # the input mapping is level 1
        inner = "[" * (levels - 1) + "1" + "]" * (levels - 1)
        return (
            f"name: deep\ntriggers:\n  - schedule: {{cron: '* * * * *', input: {{x: {inner}}}}}\n"
            "steps:\n  - id: a\n    agent_task: {agent: a, message: m}\n"
        )

    spec = parse_process(text(MAX_INPUT_DEPTH))
    assert validate(spec) == []
    assert message_violations(spec_to_proto(spec)) == []
    with pytest.raises(AuthoringError, match=f"input nests deeper than {MAX_INPUT_DEPTH}"):
        parse_process(text(MAX_INPUT_DEPTH + 1))


def test_a_process_with_more_steps_than_the_limit_is_refused_at_once() -> None:
    """50,000 one-line steps fit in a 1.3 MB request; validating them took seconds."""
    from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step
    from trinity_process_model.validation import MAX_STEPS, validate

    # Every id twice: had the per-step rules run, they would report duplicates.
    steps = tuple(Step(id=f"s{i // 2}", config=AgentTaskConfig("a", "m")) for i in range(50_000))
    violations = validate(ProcessSpec(name="many", steps=steps))
    assert [v.field for v in violations] == ["steps"]
    assert f"at most {MAX_STEPS} steps" in violations[0].description
    unique = tuple(Step(id=f"s{i}", config=AgentTaskConfig("a", "m")) for i in range(MAX_STEPS))
    assert validate(ProcessSpec(name="many", steps=unique)) == []
