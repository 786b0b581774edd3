"""The process file format: fixtures, what is written, and every kind of parse error."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from trinity_process_model.authoring import (
    MAX_INPUT_VALUES,
    AuthoringError,
    dump_process,
    parse_process,
    spec_from_data,
    spec_to_data,
)
from trinity_process_model.graph import ProcessGraph
from trinity_process_model.model import (
    ActionKind,
    AgentTaskConfig,
    BudgetAction,
    Channel,
    EventTrigger,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    ManualTrigger,
    Money,
    NotificationConfig,
    ProcessSpec,
    RetryPolicy,
    Route,
    ScheduleTrigger,
    Step,
    TimeoutAction,
    TimerConfig,
)
from trinity_process_model.proto_codec import spec_from_proto, spec_to_proto
from trinity_process_model.validation import validate

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.iterdir())


def problems(text: str) -> dict[str, str]:
    """field → description of every problem of a file that must not parse."""
    with pytest.raises(AuthoringError) as caught:
        parse_process(text)
    return {v.field: v.description for v in caught.value.violations}


def minimal(step_yaml: str) -> str:
    return "name: p\nsteps:\n" + step_yaml


# ------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixtures_parse_validate_and_round_trip(path: Path) -> None:
    spec = parse_process(path.read_text())
    assert validate(spec) == []
    assert parse_process(dump_process(spec)) == spec
    assert parse_process(dump_process(spec, "json")) == spec


def test_research_report_is_the_it3_shape() -> None:
    spec = parse_process((FIXTURES / "research_report.yaml").read_text())
    graph = ProcessGraph.build(spec)
    assert graph.entry_steps == ("research",)
    assert graph.loop_routes == {("resubmit", "review"): 3}
    decide = spec.step("decide").config
    assert isinstance(decide, GatewayConfig) and decide.type is GatewayType.EXCLUSIVE
    assert [r.target for r in decide.routes] == ["publish", "revise", "rejected"]
    assert decide.default_route == Route("rejected", is_default=True)
    assert spec.budget is not None
    assert spec.budget.limit == Money(Decimal("5.00"), "USD")
    assert spec.budget.on_exceeded is BudgetAction.PAUSE
    assert spec.step("next_morning").config == TimerConfig(until="09:00", timezone="Europe/Berlin")
    announce = spec.step("announce").config
    assert isinstance(announce, NotificationConfig) and announce.channel is Channel.FILE
    review = spec.step("review").config
    assert isinstance(review, HumanApprovalConfig)
    assert review.on_timeout is TimeoutAction.NOTIFY
    assert review.reminder_interval == timedelta(hours=4)
    assert spec.step("research").timeout == timedelta(minutes=30)
    assert spec.triggers[0] == ManualTrigger()
    assert spec.triggers[1] == ScheduleTrigger(
        "0 9 * * MON",
        "Europe/Berlin",
        {"topic": "Weekly market overview", "sources": ["news", "filings"]},
    )


def test_governance_run_is_the_527_shape() -> None:
    spec = parse_process((FIXTURES / "governance_run.yaml").read_text())
    assert [s.kind.value for s in spec.steps] == [
        "agent_task",
        "human_approval",
        "tool_run",
        "agent_task",
        "tool_run",
        "gateway",
        "human_approval",
        "tool_run",
        "notification",
    ]
    graph = ProcessGraph.build(spec)
    assert graph.loop_routes == {("green", "implement"): 3}
    assert graph.entry_steps == ("triage",)
    assert [a.action for a in (spec.step(i).config for i in ("scaffold", "verify", "publish"))] == [  # type: ignore[union-attr]
        ActionKind.SCAFFOLD,
        ActionKind.VERIFY,
        ActionKind.PUBLISH,
    ]
    assert spec.triggers[0] == EventTrigger("transformation.requests.created.>")


def test_json_fixture_reads_money_mappings_and_iso_durations() -> None:
    spec = parse_process((FIXTURES / "daily_digest.json").read_text())
    assert spec.budget is not None and spec.budget.limit == Money(Decimal("1.50"), "EUR")
    assert spec.step("news").timeout == timedelta(minutes=10)
    fan_out = spec.step("fan_out").config
    assert isinstance(fan_out, GatewayConfig) and fan_out.type is GatewayType.PARALLEL


# ------------------------------------------------------------------- writing


def test_dump_writes_only_what_differs_from_the_defaults() -> None:
    spec = ProcessSpec(
        name="small",
        steps=(
            Step("a", AgentTaskConfig("bot", "hi")),
            Step("b", TimerConfig(duration=timedelta(minutes=90)), depends_on=("a",)),
        ),
    )
    assert dump_process(spec) == (
        "name: small\n"
        "steps:\n"
        "  - id: a\n"
        "    agent_task:\n"
        "      agent: bot\n"
        "      message: hi\n"
        "  - id: b\n"
        "    depends_on: [a]\n"
        "    timer:\n"
        "      duration: 1h30m\n"
    )


def test_dump_keeps_explicit_defaults_apart_from_absent_ones() -> None:
    """retry: {} (every default) is not the same as no retry (the process default)."""
    spec = ProcessSpec("p", (Step("a", AgentTaskConfig("x", "y"), retry=RetryPolicy()),))
    text = dump_process(spec)
    assert "retry: {}" in text
    assert parse_process(text) == spec


def test_dump_quotes_what_yaml_would_misread() -> None:
    spec = ProcessSpec(
        "p",
        (Step("a", AgentTaskConfig("yes", "{{ x == 'y' }}")),),
        labels={"on": "no", "n": "007", "t": "9:30", "d": "2024-01-01", "f": "1e5", "e": ""},
    )
    text = dump_process(spec)
    assert "message: \"{{ x == 'y' }}\"" in text
    assert parse_process(text) == spec


def test_dump_writes_multiline_text_as_blocks() -> None:
    spec = ProcessSpec("p", (Step("a", AgentTaskConfig("x", "line one\nline two\n")),))
    assert "message: |\n        line one\n        line two\n" in dump_process(spec)


def test_dump_json_is_json() -> None:
    spec = parse_process((FIXTURES / "research_report.yaml").read_text())
    data = json.loads(dump_process(spec, "json"))
    assert data["steps"][0]["agent_task"]["max_cost"] == "2.00 USD"
    assert data == spec_to_data(spec)
    assert spec_from_data(data) == spec


def test_dump_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        dump_process(ProcessSpec("p", ()), "toml")  # type: ignore[arg-type]


# --------------------------------------------------------------- the grammar


def test_durations_money_and_routes_in_every_spelling() -> None:
    spec = parse_process(
        """
name: p
budget: {limit: {amount: "12.50", currency: EUR}}
steps:
  - id: a
    agent_task: {agent: x, message: y, max_cost: 3 EUR}
    timeout: PT1H30M
    retry: {initial_backoff: 250ms, max_backoff: 2d, backoff_multiplier: 3}
  - id: g
    gateway:
      routes:
        - condition: "{{ input.ok }}"
          target: a
          max_iterations: 2
        - is_default: true
          target: a
"""
    )
    a = spec.step("a")
    assert a.timeout == timedelta(hours=1, minutes=30)
    assert a.retry == RetryPolicy(1, timedelta(milliseconds=250), 3.0, timedelta(days=2))
    assert isinstance(a.config, AgentTaskConfig)
    assert a.config.max_cost == Money(Decimal(3), "EUR")
    assert spec.budget is not None and spec.budget.limit == Money(Decimal("12.50"), "EUR")
    gateway = spec.step("g").config
    assert gateway == GatewayConfig(
        GatewayType.EXCLUSIVE,
        (Route("a", "{{ input.ok }}", max_iterations=2), Route("a", is_default=True)),
    )


def test_triggers_in_every_spelling() -> None:
    spec = parse_process(
        """
name: p
triggers:
  - manual
  - manual: {}
  - manual:
  - schedule: {cron: "0 9 * * *"}
  - event: {subject: a.b.>}
steps: []
"""
    )
    assert spec.triggers == (
        ManualTrigger(),
        ManualTrigger(),
        ManualTrigger(),
        ScheduleTrigger("0 9 * * *"),
        EventTrigger("a.b.>"),
    )


def test_yaml_is_read_as_yaml_1_2() -> None:
    """yes/no/on/off, 9:30 and dates stay text; 012 is twelve."""
    spec = parse_process(
        """
name: p
labels: {a: yes, b: off, c: 9:30, d: 2024-01-01, e: "012"}
triggers:
  - schedule: {cron: "0 9 * * *", input: {n: 012, o: 0o17, h: 0x1f, f: 1e3, t: true}}
steps: []
"""
    )
    assert spec.labels == {"a": "yes", "b": "off", "c": "9:30", "d": "2024-01-01", "e": "012"}
    schedule = spec.triggers[0]
    assert isinstance(schedule, ScheduleTrigger)
    assert schedule.input == {"n": 12, "o": 15, "h": 31, "f": 1000.0, "t": True}


def test_null_means_not_given() -> None:
    spec = parse_process(
        "name: p\ndescription:\nsteps:\n  - id: a\n    timeout: ~\n    timer: {duration: 5m}\n"
    )
    assert spec.description == "" and spec.steps[0].timeout is None


def test_anchors_and_aliases_work() -> None:
    spec = parse_process(
        """
name: p
steps:
  - id: a
    agent_task: &task {agent: x, message: hello}
  - id: b
    agent_task: *task
"""
    )
    assert spec.steps[0].config == spec.steps[1].config


# ----------------------------------------------------------------- problems


def test_yaml_syntax_error_has_line_and_column() -> None:
    (message,) = problems("name: p\nsteps: [a, b\n").values()
    assert message.startswith("YAML syntax error at line 3, column 1")


def test_json_syntax_error_has_line_and_column() -> None:
    (message,) = problems('{\n  "name": "p",\n  "steps": [,]\n}').values()
    assert message.startswith("JSON syntax error at line 3, column 13")


def test_explicit_json_is_not_read_as_yaml() -> None:
    with pytest.raises(AuthoringError, match="JSON syntax error"):
        parse_process("name: p\nsteps: []\n", format="json")


def test_yaml_flow_mapping_is_still_yaml() -> None:
    assert parse_process("{name: p, steps: []}") == ProcessSpec("p", ())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("# nothing\n", "empty"),
        ("- a\n- b\n", "must be a mapping"),
        ("just text", "must be a mapping"),
    ],
)
def test_not_a_process(text: str, message: str) -> None:
    assert message in problems(text)[""]


def test_several_documents_are_refused() -> None:
    assert "YAML syntax error" in problems("name: a\nsteps: []\n---\nname: b\n")[""]


def test_unknown_step_kind() -> None:
    found = problems(minimal("  - id: a\n    agent_tsk: {agent: x, message: y}\n"))
    assert found == {
        "steps[0].agent_tsk": "unknown step kind 'agent_tsk' (did you mean 'agent_task'?); a step "
        "has exactly one of agent_task, human_approval, gateway, timer, notification, tool_run, "
        "wait_for_message, sub_process (line 4, column 5)"
    }


def test_step_without_kind() -> None:
    assert "the step has no kind" in problems(minimal("  - id: a\n"))["steps[0]"]


def test_step_with_two_kinds() -> None:
    found = problems(
        minimal("  - id: a\n    timer: {duration: 1m}\n    tool_run: {action: verify}\n")
    )
    assert "exactly one kind, found timer and tool_run" in found["steps[0]"]


def test_type_key_gets_a_hint() -> None:
    found = problems(
        minimal("  - id: a\n    type: agent_task\n    agent_task: {agent: x, message: y}\n")
    )
    assert "the kind of a step is a key" in found["steps[0].type"]


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ("nmae: p\nsteps: []\n", "nmae", "did you mean 'name'?"),
        (
            minimal("  - id: a\n    agent_task: {agent: x, mesage: y}\n"),
            "steps[0].agent_task.mesage",
            "did you mean 'message'?",
        ),
        (
            minimal("  - id: a\n    dependson: [b]\n    timer: {duration: 1m}\n"),
            "steps[0].dependson",
            "did you mean 'depends_on'?",
        ),
        (
            minimal("  - id: g\n    gateway:\n      routes:\n        - {when: x, to: a}\n"),
            "steps[0].gateway.routes[0].to",
            "did you mean 'target'?",
        ),
        (
            minimal("  - id: g\n    gateway:\n      routes:\n        - {when: x, target: a}\n"),
            "steps[0].gateway.routes[0].when",
            "did you mean 'condition'?",
        ),
        (
            minimal(
                "  - id: g\n    gateway:\n      routes:\n        - {default: true, target: a}\n"
            ),
            "steps[0].gateway.routes[0].default",
            "did you mean 'is_default'?",
        ),
        (
            minimal("  - id: a\n    agent_task: {agent: x, message: y, timeout: 5m}\n"),
            "steps[0].agent_task.timeout",
            "belongs to the step itself",
        ),
        (
            "name: p\nbudget: {limit: 1 USD, on_exceed: pause}\nsteps: []\n",
            "budget.on_exceed",
            "did you mean 'on_exceeded'?",
        ),
        (
            "name: p\ndefault_retry: {attempts: 3}\nsteps: []\n",
            "default_retry.attempts",
            "did you mean 'max_attempts'?",
        ),
        (
            "name: p\ntriggers: [{schedule: {cron: '* * * * *', tz: UTC}}]\nsteps: []\n",
            "triggers[0].schedule.tz",
            "expected one of: cron, timezone, input",
        ),
        (
            "name: p\noutputs: [{channel: file, target: x, message: y, subjet: z}]\nsteps: []\n",
            "outputs[0].subjet",
            "did you mean 'subject'?",
        ),
    ],
)
def test_unknown_keys_are_errors(text: str, field: str, hint: str) -> None:
    found = problems(text)
    assert field in found, found
    assert hint in found[field]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("name: 7\nsteps: []\n", "name", "expected text, got a number (7)"),
        ("name: p\nsteps: {a: 1}\n", "steps", "expected a list"),
        ("name: p\nsteps: [a]\n", "steps[0]", "a step must be a mapping, got text"),
        (
            minimal("  - id: a\n    depends_on: b\n    timer: {duration: 1m}\n"),
            "steps[0].depends_on",
            "like [b]",
        ),
        (
            minimal("  - id: a\n    depends_on: [1]\n    timer: {duration: 1m}\n"),
            "steps[0].depends_on[0]",
            "expected text",
        ),
        (minimal("  - id: a\n    timer: 5m\n"), "steps[0].timer", "timer must be a mapping"),
        (
            minimal("  - id: g\n    gateway: {routes: [{target: a, is_default: yes}]}\n"),
            "steps[0].gateway.routes[0].is_default",
            "expected true or false",
        ),
        (
            minimal("  - id: g\n    gateway: {routes: [{target: a, max_iterations: -1}]}\n"),
            "steps[0].gateway.routes[0].max_iterations",
            "0..4294967295",
        ),
        (
            minimal("  - id: g\n    gateway: {routes: [{target: a, max_iterations: 2.5}]}\n"),
            "steps[0].gateway.routes[0].max_iterations",
            "whole number",
        ),
        (
            minimal("  - id: g\n    gateway: {type: xor, routes: []}\n"),
            "steps[0].gateway.type",
            "one of exclusive, parallel, inclusive",
        ),
        (
            minimal("  - id: n\n    notification: {target: x, message: y}\n"),
            "steps[0].notification.channel",
            "channel is required",
        ),
        (
            minimal("  - id: n\n    notification: {channel: sms, target: x, message: y}\n"),
            "steps[0].notification.channel",
            "unknown channel 'sms'",
        ),
        (
            minimal("  - id: t\n    tool_run: {}\n"),
            "steps[0].tool_run.action",
            "action is required",
        ),
        (
            minimal("  - id: t\n    tool_run: {action: verify, arguments: {a: 1}}\n"),
            "steps[0].tool_run.arguments.a",
            "expected text",
        ),
        (
            minimal("  - id: t\n    tool_run: {action: verify}\n    on_failure: ignore\n"),
            "steps[0].on_failure",
            "one of fail, continue",
        ),
        (
            minimal("  - id: a\n    human_approval: {approvers: [a], on_timeout: wait}\n"),
            "steps[0].human_approval.on_timeout",
            "one of notify, reject, auto_approve",
        ),
        (
            "name: p\ndefault_retry: {max_attempts: 0}\nsteps: []\n",
            "default_retry.max_attempts",
            "1..4294967295",
        ),
        (
            "name: p\ndefault_retry: {backoff_multiplier: 0}\nsteps: []\n",
            "default_retry.backoff_multiplier",
            "must not be 0",
        ),
        (
            "name: p\ndefault_retry: {backoff_multiplier: fast}\nsteps: []\n",
            "default_retry.backoff_multiplier",
            "expected a number",
        ),
        ("name: p\nlabels: [a]\nsteps: []\n", "labels", "expected a mapping"),
        ("name: p\nlabels: {a: 1}\nsteps: []\n", "labels.a", "expected text"),
        ("name: p\nlabels: {a: }\nsteps: []\n", "labels.a", "expected text, got nothing"),
        ("name: p\ntriggers: [hourly]\nsteps: []\n", "triggers[0]", "unknown trigger 'hourly'"),
        (
            "name: p\ntriggers: [{manual: {}, event: {subject: a}}]\nsteps: []\n",
            "triggers[0]",
            "one of manual, schedule or event",
        ),
        ("name: p\ntriggers: [{manual: {x: 1}}]\nsteps: []\n", "triggers[0].manual", "no settings"),
        (
            "name: p\ntriggers: [{schedule: {cron: '* * * * *', input: [1]}}]\nsteps: []\n",
            "triggers[0].schedule.input",
            "is a mapping",
        ),
        (
            "name: p\ntriggers: [{schedule: {cron: '* * * * *', timezone: ''}}]\nsteps: []\n",
            "triggers[0].schedule.timezone",
            "leave it out for UTC",
        ),
        (
            "name: p\ntriggers: [{schedule: {cron: '* * * * *', input: {a: 9007199254740993}}}]\nsteps: []\n",
            "triggers[0].schedule.input.a",
            "2^53",
        ),
        (
            "name: p\ntriggers: [{schedule: {cron: '* * * * *', input: {a: !!binary aGk=}}}]\nsteps: []\n",
            "triggers[0].schedule.input.a",
            "not a JSON value",
        ),
        ("name: p\nbudget: {on_exceeded: pause}\nsteps: []\n", "budget.limit", "needs a limit"),
        (
            minimal("  - id: w\n    timer: {duration: 5m, until: '09:00'}\n"),
            "steps[0].timer",
            "not both",
        ),
        (
            "name: p\nsteps:\n  - id: a\n    timer: {duration: 1m}\n    name: x\n    name: y\n",
            "steps[0].name",
            "duplicate key 'name'",
        ),
        ('{"name": "p", "name": "q", "steps": []}', "name", "duplicate key 'name'"),
        ("name: p\n? [a, b]\n: 1\nsteps: []\n", "", "YAML syntax error"),
    ],
)
def test_wrong_shapes_are_errors(text: str, field: str, words: str) -> None:
    found = problems(text)
    assert field in found, found
    assert words in found[field]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("5 minutes", "bad duration"),
        ("5", "bad duration"),
        ("30m1h", "largest first"),
        ("1h1h", "largest first"),
        ("PT", "bad ISO 8601 duration"),
        ("P1M", "bad ISO 8601 duration"),
        ("1.0000005ms", "finer than a microsecond"),
        ("400000000d", "longer than 10,000 years"),
        ("", "empty duration"),
    ],
)
def test_bad_durations(value: str, words: str) -> None:
    found = problems(minimal(f"  - id: a\n    timer: {{duration: '{value}'}}\n"))
    assert words in found["steps[0].timer.duration"]


def test_durations_must_be_text() -> None:
    found = problems(minimal("  - id: a\n    timer: {duration: 300}\n"))
    assert "expected a duration like '30s'" in found["steps[0].timer.duration"]


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ("'5 dollars'", "budget.limit", "bad money"),
        ("'USD 5'", "budget.limit", "bad money"),
        ("'5 usd'", "budget.limit", "upper case"),
        ("'1.0000000001 USD'", "budget.limit", "9 decimal places"),
        ("'99999999999999999999 USD'", "budget.limit", "too large"),
        ("5", "budget.limit", 'expected money like "12.50 USD"'),
        ("{amount: 1.5, currency: USD}", "budget.limit.amount", "a float is not exact"),
        ("{amount: abc, currency: USD}", "budget.limit.amount", "bad amount"),
        ("{currency: USD}", "budget.limit.amount", "required"),
        ("{amount: '1', currency: dollars}", "budget.limit.currency", "ISO 4217"),
        ("{amount: '1', currency: USD, cents: 5}", "budget.limit.cents", "unknown key"),
    ],
)
def test_bad_money(value: str, field: str, words: str) -> None:
    found = problems(f"name: p\nbudget: {{limit: {value}}}\nsteps: []\n")
    assert field in found, found
    assert words in found[field]


def test_all_problems_at_once_with_positions() -> None:
    found = problems(
        """name: p
steps:
  - id: a
    agent_task: {agent: x, mesage: y}
    timeout: soon
  - id: b
    notification: {channel: pigeon, target: x, message: y}
budget: {limit: 5 dollars}
"""
    )
    assert found == {
        "steps[0].agent_task.mesage": "unknown key 'mesage' (did you mean 'message'?) (line 4, column 28)",
        "steps[0].timeout": 'bad duration \'soon\'; write a duration like "30s", "5m", "1h30m", '
        '"2d", "250ms" or ISO 8601 "PT5M" (line 5, column 5)',
        "steps[1].notification.channel": "unknown channel 'pigeon': one of webhook, email, slack, "
        "file (line 7, column 20)",
        "budget.limit": "bad money '5 dollars'; write money as \"<amount> <ISO 4217 code>\", for "
        'example "12.50 USD" (line 8, column 10)',
    }


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(AuthoringError) as caught:
        parse_process("name: 1\nsteps: 2\n")
    assert str(caught.value).splitlines() == [
        "2 problems:",
        "  name: expected text, got a number (1) (put it in quotes) (line 1, column 1)",
        "  steps: expected a list, got a number (2) (line 2, column 1)",
    ]


def test_alias_bombs_are_bounded() -> None:
    """Eight levels of ten aliases each would expand to 10^8 values."""
    anchors = ["        x0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        anchors.append(f"        x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    text = (
        "name: p\ntriggers:\n  - schedule:\n      cron: '* * * * *'\n      input:\n"
        + "\n".join(anchors)
        + "\nsteps: []\n"
    )
    found = problems(text)
    assert any(f"more than {MAX_INPUT_VALUES} values" in d for d in found.values()), found


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    text = (
        "name: p\ntriggers: [{schedule: {cron: '* * * * *', input: {a: "
        + "[" * 40
        + "]" * 40
        + "}}}]\nsteps: []\n"
    )
    assert any("deeper than 24" in d for d in problems(text).values())
    deeper = '{"name": "p", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert "nests deeper than 64 levels" in problems(deeper)[""]


def test_the_documented_example_is_the_it3_fixture() -> None:
    """FORMAT.md shows research_report.yaml; both must stay valid and the same."""
    doc = (Path(__file__).parents[1] / "FORMAT.md").read_text()
    example = doc.split("## A complete example", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_process(example)
    assert validate(spec) == []
    assert spec == parse_process((FIXTURES / "research_report.yaml").read_text())
    snippet = doc.split('This is how "iterate until green" is written', 1)[1]
    routes = snippet.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert parse_process("name: p\nsteps:\n" + routes).steps[0].id == "green"


def test_integral_input_numbers_are_written_as_integers() -> None:
    spec = parse_process(
        "name: p\ntriggers: [{schedule: {cron: '* * * * *', input: {a: 3.0, b: -0.0, c: 2.5, d: [1.0e3]}}}]\nsteps: []\n"
    )
    text = dump_process(spec)
    assert "a: 3\n" in text and "b: 0\n" in text and "c: 2.5\n" in text and "- 1000\n" in text
    assert parse_process(text) == spec


def test_sub_process_round_trip_and_self_call_refused() -> None:
    text = minimal(
        "  - id: review\n"
        "    sub_process:\n"
        "      process: code-review\n"
        '      version: "1.2"\n'
        "      input: {pr: '{{ input.pr }}'}\n"
    )
    spec = parse_process(text)
    assert validate(spec) == []
    assert dump_process(spec).count("code-review") == 1
    assert parse_process(dump_process(spec)) == spec
    itself = minimal("  - id: again\n    sub_process: {process: p}\n")
    found = {v.field: v.description for v in validate(parse_process(itself))}
    assert "would start itself" in found["steps[0].sub_process.process"]
    bad = minimal("  - id: v\n    sub_process: {process: x, version: latest}\n")
    found = {v.field: v.description for v in validate(parse_process(bad))}
    assert "bad version" in found["steps[0].sub_process.version"]


def test_for_each_round_trips_and_its_input_reads_the_item() -> None:
    text = minimal(
        "  - id: plan\n"
        "    agent_task: {agent: a, message: plan}\n"
        "  - id: files\n"
        "    depends_on: [plan]\n"
        "    sub_process:\n"
        "      process: per-file\n"
        "      input: {file: '{{ item }}', at: '{{ item_index }}'}\n"
        "      for_each: '{{ steps.plan.output.files }}'\n"
        "      max_concurrency: 4\n"
        "      max_items: 100\n"
        "      tolerated_failures: 2\n"
    )
    spec = parse_process(text)
    assert validate(spec) == []
    assert parse_process(dump_process(spec)) == spec
    assert spec_from_proto(spec_to_proto(spec)) == spec
    plain = minimal("  - id: one\n    sub_process: {process: x, input: {f: '{{ item }}'}}\n")
    found = {v.field: v.description for v in validate(parse_process(plain))}
    assert "reads 'item'" in found["steps[0].sub_process.input.f"]
    too_many = minimal(
        "  - id: m\n    sub_process: {process: x, for_each: '{{ input.l }}', max_items: 5000}\n"
    )
    found = {v.field: v.description for v in validate(parse_process(too_many))}
    assert "at most 1000" in found["steps[0].sub_process.max_items"]


def test_agent_tasks_and_tool_runs_take_for_each_and_their_templates_read_the_item() -> None:
    text = minimal(
        "  - id: plan\n"
        "    agent_task: {agent: a, message: plan}\n"
        "  - id: review\n"
        "    depends_on: [plan]\n"
        "    agent_task:\n"
        "      agent: reviewer\n"
        "      message: 'review {{ item }} ({{ item_index }})'\n"
        "      for_each: '{{ steps.plan.output.files }}'\n"
        "      max_concurrency: 3\n"
        "      tolerated_failures: 1\n"
        "  - id: check\n"
        "    depends_on: [plan]\n"
        "    tool_run:\n"
        "      action: verify\n"
        "      arguments: {path: '{{ item }}'}\n"
        "      for_each: '{{ steps.plan.output.files }}'\n"
        "      max_items: 50\n"
    )
    spec = parse_process(text)
    assert validate(spec) == []
    assert parse_process(dump_process(spec)) == spec
    assert spec_from_proto(spec_to_proto(spec)) == spec
    plain = minimal(
        "  - id: one\n    agent_task: {agent: a, message: '{{ item }}', max_concurrency: 2}\n"
        "  - id: two\n    tool_run: {action: verify, arguments: {p: '{{ item_index }}'}}\n"
        "  - id: three\n    tool_run: {action: verify, for_each: '{{ [1] }}', max_items: 1001}\n"
        "  - id: four\n    agent_task: {agent: a, message: m, for_each: '{{ 1 +'}\n"
    )
    found = {v.field: v.description for v in validate(parse_process(plain))}
    assert "reads 'item'" in found["steps[0].agent_task.message"]
    assert found["steps[0].agent_task.max_concurrency"] == "only with for_each"
    assert "reads 'item_index'" in found["steps[1].tool_run.arguments.p"]
    assert "at most 1000" in found["steps[2].tool_run.max_items"]
    assert "steps[3].agent_task.for_each" in found
