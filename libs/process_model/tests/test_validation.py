"""Every validation rule, each with a failing and a passing case."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from trinity_process_model.model import (
    ActionKind,
    AgentTaskConfig,
    Budget,
    Channel,
    EventTrigger,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    ManualTrigger,
    Money,
    NotificationConfig,
    Output,
    ProcessSpec,
    RejectAction,
    RetryPolicy,
    Route,
    ScheduleTrigger,
    Step,
    TimerConfig,
    ToolRunConfig,
)
from trinity_process_model.validation import (
    Violation,
    field_path,
    is_valid_subject_filter,
    parse_until,
    validate,
)


def usd(amount: str) -> Money:
    return Money(Decimal(amount), "USD")


def base() -> ProcessSpec:
    """A valid spec with every step kind, trigger kind, an output, a budget and a loop.

    Indexes: 0 research, 1 review, 2 decide, 3 revise, 4 again, 5 publish, 6 wait, 7 announce.
    """
    return ProcessSpec(
        name="demo",
        steps=(
            Step(
                "research",
                AgentTaskConfig("researcher", "Research {{ input.topic }}", usd("1.00")),
                timeout=timedelta(minutes=30),
            ),
            Step(
                "review",
                HumanApprovalConfig(
                    ("ed@example.com",),
                    artifacts=("{{ steps.research.output }}",),
                    title="Review {{ input.topic }}",
                    reminder_interval=timedelta(hours=4),
                    on_reject=RejectAction.CONTINUE,
                ),
                depends_on=("research",),
                timeout=timedelta(hours=24),
            ),
            Step(
                "decide",
                GatewayConfig(
                    GatewayType.EXCLUSIVE,
                    (
                        Route("publish", "{{ steps.review.decision == 'approved' }}"),
                        Route("revise", is_default=True),
                    ),
                ),
                depends_on=("review",),
            ),
            Step("revise", AgentTaskConfig("researcher", "Revise: {{ steps.review.comment }}")),
            Step(
                "again",
                GatewayConfig(
                    GatewayType.EXCLUSIVE, (Route("review", is_default=True, max_iterations=3),)
                ),
                depends_on=("revise",),
            ),
            Step(
                "publish",
                ToolRunConfig(ActionKind.PUBLISH, {"report": "{{ steps.research.output }}"}),
                condition="{{ steps.review.decision == 'approved' }}",
                retry=RetryPolicy(max_attempts=3),
            ),
            Step("wait", TimerConfig(duration=timedelta(hours=1)), depends_on=("publish",)),
            Step(
                "announce",
                NotificationConfig(Channel.FILE, "out/announce.jsonl", "Done", "Report"),
                depends_on=("wait",),
            ),
        ),
        triggers=(
            ManualTrigger(),
            ScheduleTrigger("0 9 * * MON-FRI", "Europe/Berlin", {"topic": "x", "n": [1, 2.5]}),
            EventTrigger("orders.created.>"),
        ),
        outputs=(Output(Channel.WEBHOOK, "https://hooks.example.com/x", "done", "Done"),),
        budget=Budget(usd("5.00")),
        default_retry=RetryPolicy(max_attempts=2),
        labels={"team": "research"},
    )


# ------------------------------------------------------------------- helpers


def step_index(spec: ProcessSpec, step_id: str) -> int:
    return next(i for i, s in enumerate(spec.steps) if s.id == step_id)


def with_step(spec: ProcessSpec, step_id: str, **changes: Any) -> ProcessSpec:
    steps = list(spec.steps)
    i = step_index(spec, step_id)
    steps[i] = dataclasses.replace(steps[i], **changes)
    return dataclasses.replace(spec, steps=tuple(steps))


def with_config(spec: ProcessSpec, step_id: str, **changes: Any) -> ProcessSpec:
    step = spec.steps[step_index(spec, step_id)]
    return with_step(spec, step_id, config=dataclasses.replace(step.config, **changes))


def with_routes(
    spec: ProcessSpec, step_id: str, *routes: Route, kind: GatewayType | None = None
) -> ProcessSpec:
    config = spec.steps[step_index(spec, step_id)].config
    assert isinstance(config, GatewayConfig)
    return with_step(spec, step_id, config=GatewayConfig(kind or config.type, routes))


def with_trigger(spec: ProcessSpec, index: int, trigger: Any) -> ProcessSpec:
    triggers = list(spec.triggers)
    triggers[index] = trigger
    return dataclasses.replace(spec, triggers=tuple(triggers))


def with_output(spec: ProcessSpec, **changes: Any) -> ProcessSpec:
    return dataclasses.replace(spec, outputs=(dataclasses.replace(spec.outputs[0], **changes),))


def with_retry(spec: ProcessSpec, **changes: Any) -> ProcessSpec:
    assert spec.default_retry is not None
    return dataclasses.replace(
        spec, default_retry=dataclasses.replace(spec.default_retry, **changes)
    )


def only(*steps: Step) -> ProcessSpec:
    return ProcessSpec(name="one", steps=steps)


def agent(step_id: str, *deps: str) -> Step:
    return Step(step_id, AgentTaskConfig("a", "m"), depends_on=deps)


def test_base_spec_is_valid() -> None:
    assert validate(base()) == []


# --------------------------------------------------------------------- rules
# (rule, failing spec, field of the violation, words of its description, passing spec)

Case = tuple[str, Callable[[], ProcessSpec], str, str, Callable[[], ProcessSpec]]

B = base
CASES: list[Case] = [
    # routing on a rejection needs on_reject: continue (issue 18 §3)
    (
        "gateway routes on a decision that fails on rejection",
        lambda: with_config(B(), "review", on_reject=RejectAction.FAIL),
        "steps[2].gateway.routes[0].condition",
        "on_reject: continue",
        B,
    ),
    # process name
    (
        "name required",
        lambda: dataclasses.replace(B(), name=""),
        "name",
        "required",
        lambda: dataclasses.replace(B(), name="x"),
    ),
    (
        "name well-formed",
        lambda: dataclasses.replace(B(), name="My Process"),
        "name",
        "bad process name",
        lambda: dataclasses.replace(B(), name="my-process_2"),
    ),
    (
        "name starts with letter or digit",
        lambda: dataclasses.replace(B(), name="-x"),
        "name",
        "bad process name",
        lambda: dataclasses.replace(B(), name="0x"),
    ),
    # steps
    (
        "at least one step",
        lambda: dataclasses.replace(B(), steps=()),
        "steps",
        "at least one step",
        lambda: only(agent("a")),
    ),
    (
        "step id required",
        lambda: only(agent("")),
        "steps[0].id",
        "required",
        lambda: only(agent("a")),
    ),
    (
        "step id well-formed",
        lambda: only(agent("my-step")),
        "steps[0].id",
        "bad step id",
        lambda: only(agent("my_step2")),
    ),
    (
        "step id is not a number",
        lambda: only(agent("1st")),
        "steps[0].id",
        "bad step id",
        lambda: only(agent("first")),
    ),
    (
        "unique step ids",
        lambda: only(agent("a"), agent("a")),
        "steps[1].id",
        "duplicate step id",
        lambda: only(agent("a"), agent("b")),
    ),
    # references
    (
        "depends_on exists",
        lambda: only(agent("a"), agent("b", "c")),
        "steps[1].depends_on[0]",
        "unknown step 'c'",
        lambda: only(agent("a"), agent("b", "a")),
    ),
    (
        "no self-dependency",
        lambda: only(agent("a", "a")),
        "steps[0].depends_on[0]",
        "cannot depend on itself",
        lambda: only(agent("a")),
    ),
    (
        "no repeated dependency",
        lambda: only(agent("a"), agent("b", "a", "a")),
        "steps[1].depends_on[1]",
        "listed twice",
        lambda: only(agent("a"), agent("b", "a")),
    ),
    (
        "route target exists",
        lambda: with_routes(
            B(), "decide", Route("nowhere", "{{ input.x }}"), Route("revise", is_default=True)
        ),
        "steps[2].gateway.routes[0].target",
        "unknown step 'nowhere'",
        B,
    ),
    (
        "route target required",
        lambda: with_routes(
            B(), "decide", Route("", "{{ input.x }}"), Route("revise", is_default=True)
        ),
        "steps[2].gateway.routes[0].target",
        "required",
        B,
    ),
    (
        "gateway does not route to itself",
        lambda: with_routes(
            B(),
            "decide",
            Route("decide", "{{ input.x }}", max_iterations=2),
            Route("revise", is_default=True),
        ),
        "steps[2].gateway.routes[0].target",
        "cannot route to itself",
        B,
    ),
    (
        "templates read existing steps",
        lambda: with_config(B(), "research", message="{{ steps.reserch.output }}"),
        "steps[0].agent_task.message",
        "no step 'reserch'",
        B,
    ),
    (
        "templates read only the context",
        lambda: with_config(B(), "research", message="{{ inputs.topic }}"),
        "steps[0].agent_task.message",
        "'inputs', which is not in the context",
        lambda: with_config(
            B(),
            "research",
            message="{{ execution.id }} {{ process.name }} {% for x in input.l %}{{ x }}{% endfor %}",
        ),
    ),
    (
        "conditions read only the context",
        lambda: with_step(B(), "publish", condition="{{ approved }}"),
        "steps[5].condition",
        "'approved', which is not in the context",
        B,
    ),
    # cycles and loops
    (
        "no cycle through depends_on",
        lambda: only(agent("a", "b"), agent("b", "a")),
        "steps[0].depends_on[0]",
        "cycle through a → b → a",
        lambda: only(agent("a"), agent("b", "a")),
    ),
    (
        "a loop needs max_iterations",
        lambda: with_routes(B(), "again", Route("review", is_default=True)),
        "steps[4].gateway.routes[0]",
        "declares max_iterations",
        B,
    ),
    (
        "max_iterations only on a loop",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", "{{ input.x }}", max_iterations=2),
            Route("revise", is_default=True),
        ),
        "steps[2].gateway.routes[0].max_iterations",
        "applies to a loop",
        B,
    ),
    # gateways
    (
        "gateway has routes",
        lambda: with_routes(B(), "again"),
        "steps[4].gateway.routes",
        "at least one route",
        B,
    ),
    (
        "at most one default route",
        lambda: with_routes(
            B(), "decide", Route("publish", is_default=True), Route("revise", is_default=True)
        ),
        "steps[2].gateway.routes[1].is_default",
        "at most one default",
        B,
    ),
    (
        "inclusive: at most one default route",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", is_default=True),
            Route("revise", is_default=True),
            kind=GatewayType.INCLUSIVE,
        ),
        "steps[2].gateway.routes[1].is_default",
        "at most one default",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", "{{ input.a }}"),
            Route("revise", is_default=True),
            kind=GatewayType.INCLUSIVE,
        ),
    ),
    (
        "exclusive: conditions on non-default routes",
        lambda: with_routes(B(), "decide", Route("publish"), Route("revise", is_default=True)),
        "steps[2].gateway.routes[0].condition",
        "needs a condition",
        B,
    ),
    (
        "inclusive: conditions on non-default routes",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish"),
            Route("revise", "{{ input.b }}"),
            kind=GatewayType.INCLUSIVE,
        ),
        "steps[2].gateway.routes[0].condition",
        "needs a condition",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", "{{ input.a }}"),
            Route("revise", "{{ input.b }}"),
            kind=GatewayType.INCLUSIVE,
        ),
    ),
    (
        "default route has no condition",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", "{{ input.a }}"),
            Route("revise", "{{ input.b }}", is_default=True),
        ),
        "steps[2].gateway.routes[1].condition",
        "has no condition",
        B,
    ),
    (
        "parallel routes have no conditions",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", "{{ input.a }}"),
            Route("revise"),
            kind=GatewayType.PARALLEL,
        ),
        "steps[2].gateway.routes[0].condition",
        "parallel",
        lambda: with_routes(
            B(), "decide", Route("publish"), Route("revise"), kind=GatewayType.PARALLEL
        ),
    ),
    (
        "parallel gateways have no default",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish"),
            Route("revise", is_default=True),
            kind=GatewayType.PARALLEL,
        ),
        "steps[2].gateway.routes[1].is_default",
        "no default route",
        lambda: with_routes(
            B(), "decide", Route("publish"), Route("revise"), kind=GatewayType.PARALLEL
        ),
    ),
    (
        "gateway type known",
        lambda: with_config(B(), "decide", type="random"),
        "steps[2].gateway.type",
        "unknown value",
        B,
    ),
    # conditions
    (
        "step condition compiles",
        lambda: with_step(B(), "publish", condition="{{ steps.review.decision == }}"),
        "steps[5].condition",
        "",
        B,
    ),
    (
        "step condition is safe",
        lambda: with_step(B(), "publish", condition="{{ input.__class__ }}"),
        "steps[5].condition",
        "not allowed",
        B,
    ),
    (
        "route condition compiles",
        lambda: with_routes(
            B(),
            "decide",
            Route("publish", "{{ steps.review.decision = 1 }}"),
            Route("revise", is_default=True),
        ),
        "steps[2].gateway.routes[0].condition",
        "",
        B,
    ),
    # templates
    (
        "agent message compiles",
        lambda: with_config(B(), "research", message="Research {{ input.topic"),
        "steps[0].agent_task.message",
        "",
        B,
    ),
    (
        "agent message is safe",
        lambda: with_config(B(), "research", message="{{ input.__class__.__mro__ }}"),
        "steps[0].agent_task.message",
        "not allowed",
        B,
    ),
    (
        "agent message required",
        lambda: with_config(B(), "research", message="  "),
        "steps[0].agent_task.message",
        "required",
        B,
    ),
    (
        "approval artifacts compile",
        lambda: with_config(B(), "review", artifacts=("{{ oops",)),
        "steps[1].human_approval.artifacts[0]",
        "",
        B,
    ),
    (
        "approval artifacts are not blank",
        lambda: with_config(B(), "review", artifacts=("",)),
        "steps[1].human_approval.artifacts[0]",
        "required",
        B,
    ),
    (
        "approval title compiles",
        lambda: with_config(B(), "review", title="{% for %}"),
        "steps[1].human_approval.title",
        "",
        B,
    ),
    (
        "tool arguments compile",
        lambda: with_config(B(), "publish", arguments={"report": "{{ }}"}),
        "steps[5].tool_run.arguments.report",
        "",
        B,
    ),
    (
        "tool argument names",
        lambda: with_config(B(), "publish", arguments={"my-report": "x"}),
        'steps[5].tool_run.arguments["my-report"]',
        "bad argument name",
        B,
    ),
    (
        "tool action known",
        lambda: with_config(B(), "publish", action="deploy"),
        "steps[5].tool_run.action",
        "unknown value 'deploy'",
        B,
    ),
    (
        "notification message compiles",
        lambda: with_config(B(), "announce", message="{{ x"),
        "steps[7].notification.message",
        "",
        B,
    ),
    (
        "notification message required",
        lambda: with_config(B(), "announce", message=""),
        "steps[7].notification.message",
        "required",
        B,
    ),
    (
        "notification subject compiles",
        lambda: with_config(B(), "announce", subject="{{ x"),
        "steps[7].notification.subject",
        "",
        B,
    ),
    (
        "output message compiles",
        lambda: with_output(B(), message="{{ x"),
        "outputs[0].message",
        "",
        B,
    ),
    (
        "output subject compiles",
        lambda: with_output(B(), subject="{{ x.__dict__ }}"),
        "outputs[0].subject",
        "not allowed",
        B,
    ),
    # agents and approvals
    (
        "agent name present",
        lambda: with_config(B(), "research", agent=""),
        "steps[0].agent_task.agent",
        "agent name is required",
        B,
    ),
    (
        "at least one approver",
        lambda: with_config(B(), "review", approvers=()),
        "steps[1].human_approval.approvers",
        "at least one approver",
        B,
    ),
    (
        "approvers are named",
        lambda: with_config(B(), "review", approvers=("a@example.com", " ")),
        "steps[1].human_approval.approvers[1]",
        "must name an approver",
        B,
    ),
    (
        "approvers are not repeated",
        lambda: with_config(B(), "review", approvers=("a@x.io", "a@x.io")),
        "steps[1].human_approval.approvers[1]",
        "listed twice",
        B,
    ),
    (
        "max_reminders not negative",
        lambda: with_config(B(), "review", max_reminders=-1),
        "steps[1].human_approval.max_reminders",
        "negative",
        B,
    ),
    (
        "on_timeout known",
        lambda: with_config(B(), "review", on_timeout="explode"),
        "steps[1].human_approval.on_timeout",
        "unknown value",
        B,
    ),
    # deliveries
    (
        "notification target present",
        lambda: with_config(B(), "announce", target=""),
        "steps[7].notification.target",
        "required",
        B,
    ),
    (
        "notification channel known",
        lambda: with_config(B(), "announce", channel="pager"),
        "steps[7].notification.channel",
        "unknown value 'pager'",
        B,
    ),
    (
        "file target stays in its folder",
        lambda: with_config(B(), "announce", target="../../etc/passwd"),
        "steps[7].notification.target",
        "relative file name",
        B,
    ),
    (
        "file target is relative",
        lambda: with_config(B(), "announce", target="/var/log/x"),
        "steps[7].notification.target",
        "relative file name",
        B,
    ),
    (
        "email target is an address",
        lambda: with_config(B(), "announce", channel=Channel.EMAIL, target="ops"),
        "steps[7].notification.target",
        "address",
        lambda: with_config(
            B(), "announce", channel=Channel.EMAIL, target="ops@example.com, cto@example.com"
        ),
    ),
    (
        "slack target is a URL",
        lambda: with_config(B(), "announce", channel=Channel.SLACK, target="#general"),
        "steps[7].notification.target",
        "http(s) URL",
        lambda: with_config(
            B(), "announce", channel=Channel.SLACK, target="https://hooks.slack.com/services/T/B/X"
        ),
    ),
    (
        "output target present",
        lambda: with_output(B(), target=" "),
        "outputs[0].target",
        "required",
        B,
    ),
    (
        "webhook target is a URL",
        lambda: with_output(B(), target="ftp://example.com/x"),
        "outputs[0].target",
        "http(s) URL",
        B,
    ),
    (
        "output channel known",
        lambda: with_output(B(), channel=None),
        "outputs[0].channel",
        "unknown value None",
        B,
    ),
    # schedules and events
    (
        "cron parses",
        lambda: with_trigger(B(), 1, ScheduleTrigger("61 * * * *")),
        "triggers[1].schedule.cron",
        "bad cron expression",
        lambda: with_trigger(B(), 1, ScheduleTrigger("*/15 8-18 * * 1-5")),
    ),
    (
        "cron has five fields",
        lambda: with_trigger(B(), 1, ScheduleTrigger("0 0 9 * * MON")),
        "triggers[1].schedule.cron",
        "five fields",
        lambda: with_trigger(B(), 1, ScheduleTrigger("@daily")),
    ),
    (
        "cron required",
        lambda: with_trigger(B(), 1, ScheduleTrigger("")),
        "triggers[1].schedule.cron",
        "required",
        B,
    ),
    (
        "schedule timezone exists",
        lambda: with_trigger(B(), 1, ScheduleTrigger("0 9 * * *", "Mars/Olympus")),
        "triggers[1].schedule.timezone",
        "unknown timezone",
        lambda: with_trigger(B(), 1, ScheduleTrigger("0 9 * * *", "Asia/Kolkata")),
    ),
    (
        "schedule input survives the contract",
        lambda: with_trigger(B(), 1, ScheduleTrigger("0 9 * * *", input={"big": 2**60})),
        "triggers[1].schedule.input.big",
        "2^53",
        lambda: with_trigger(B(), 1, ScheduleTrigger("0 9 * * *", input={"big": 2**53})),
    ),
    (
        "schedule input is JSON",
        lambda: with_trigger(B(), 1, ScheduleTrigger("0 9 * * *", input={"when": {"x": {1, 2}}})),
        "triggers[1].schedule.input.when.x",
        "not a JSON value",
        B,
    ),
    (
        "event subject required",
        lambda: with_trigger(B(), 2, EventTrigger("")),
        "triggers[2].event.subject",
        "required",
        B,
    ),
    (
        "event subject is a NATS filter",
        lambda: with_trigger(B(), 2, EventTrigger("orders.>.eu")),
        "triggers[2].event.subject",
        "bad NATS subject filter",
        lambda: with_trigger(B(), 2, EventTrigger("orders.*.eu")),
    ),
    # timers
    (
        "timer has a duration or until",
        lambda: with_config(B(), "wait", duration=None),
        "steps[6].timer",
        "exactly one",
        lambda: with_config(B(), "wait", duration=None, until="09:30"),
    ),
    (
        "timer has not both",
        lambda: with_config(B(), "wait", until="09:30"),
        "steps[6].timer",
        "exactly one",
        B,
    ),
    (
        "timer until parses",
        lambda: with_config(B(), "wait", duration=None, until="25:00"),
        "steps[6].timer.until",
        "",
        lambda: with_config(B(), "wait", duration=None, until="2027-01-31T23:59:59"),
    ),
    (
        "timer until format",
        lambda: with_config(B(), "wait", duration=None, until="9am"),
        "steps[6].timer.until",
        "bad time",
        B,
    ),
    (
        "timer timezone exists",
        lambda: with_config(B(), "wait", timezone="Europe/Atlantis"),
        "steps[6].timer.timezone",
        "unknown timezone",
        lambda: with_config(B(), "wait", timezone="Europe/Berlin"),
    ),
    (
        "timer timezone not empty",
        lambda: with_config(B(), "wait", timezone=""),
        "steps[6].timer.timezone",
        "unknown timezone",
        B,
    ),
    # durations
    (
        "timeout positive",
        lambda: with_step(B(), "research", timeout=timedelta(0)),
        "steps[0].timeout",
        "positive",
        B,
    ),
    (
        "timeout not negative",
        lambda: with_step(B(), "research", timeout=timedelta(seconds=-5)),
        "steps[0].timeout",
        "got -5s",
        B,
    ),
    (
        "timeout at most 10,000 years",
        lambda: with_step(B(), "research", timeout=timedelta(days=3_700_000)),
        "steps[0].timeout",
        "10,000 years",
        B,
    ),
    (
        "timer duration positive",
        lambda: with_config(B(), "wait", duration=timedelta(0)),
        "steps[6].timer.duration",
        "positive",
        B,
    ),
    (
        "reminder interval positive",
        lambda: with_config(B(), "review", reminder_interval=timedelta(0)),
        "steps[1].human_approval.reminder_interval",
        "positive",
        B,
    ),
    (
        "initial backoff positive",
        lambda: with_retry(B(), initial_backoff=timedelta(0)),
        "default_retry.initial_backoff",
        "positive",
        B,
    ),
    (
        "max backoff positive",
        lambda: with_retry(B(), max_backoff=timedelta(seconds=-1)),
        "default_retry.max_backoff",
        "positive",
        B,
    ),
    # retry policies
    (
        "max_attempts at least 1",
        lambda: with_retry(B(), max_attempts=0),
        "default_retry.max_attempts",
        "at least 1",
        lambda: with_retry(B(), max_attempts=1),
    ),
    (
        "multiplier at least 1",
        lambda: with_retry(B(), backoff_multiplier=0.5),
        "default_retry.backoff_multiplier",
        "at least 1",
        lambda: with_retry(B(), backoff_multiplier=1.0),
    ),
    (
        "multiplier is a number",
        lambda: with_retry(B(), backoff_multiplier=float("nan")),
        "default_retry.backoff_multiplier",
        "at least 1",
        B,
    ),
    (
        "max backoff at least initial",
        lambda: with_retry(
            B(), initial_backoff=timedelta(minutes=10), max_backoff=timedelta(minutes=1)
        ),
        "default_retry.max_backoff",
        "shorter than initial_backoff",
        lambda: with_retry(
            B(), initial_backoff=timedelta(minutes=1), max_backoff=timedelta(minutes=1)
        ),
    ),
    (
        "failure codes are UPPER_SNAKE",
        lambda: with_retry(B(), non_retryable_codes=("timeout",)),
        "default_retry.non_retryable_codes[0]",
        "UPPER_SNAKE",
        lambda: with_retry(B(), non_retryable_codes=("TIMEOUT",)),
    ),
    (
        "step retry checked too",
        lambda: with_step(B(), "publish", retry=RetryPolicy(max_attempts=0)),
        "steps[5].retry.max_attempts",
        "at least 1",
        B,
    ),
    # money
    (
        "budget not negative",
        lambda: dataclasses.replace(B(), budget=Budget(usd("-1"))),
        "budget.limit.amount",
        "negative",
        lambda: dataclasses.replace(B(), budget=Budget(usd("0"))),
    ),
    (
        "budget currency known",
        lambda: dataclasses.replace(B(), budget=Budget(Money(Decimal(5), "XYZ"))),
        "budget.limit.currency",
        "unknown currency 'XYZ'",
        B,
    ),
    (
        "budget currency is a code",
        lambda: dataclasses.replace(B(), budget=Budget(Money(Decimal(5), "usd"))),
        "budget.limit.currency",
        "unknown currency",
        B,
    ),
    (
        "money has at most 9 decimals",
        lambda: dataclasses.replace(B(), budget=Budget(usd("0.0000000001"))),
        "budget.limit.amount",
        "9 decimal places",
        lambda: dataclasses.replace(B(), budget=Budget(usd("0.000000001"))),
    ),
    (
        "money is finite",
        lambda: dataclasses.replace(B(), budget=Budget(usd("NaN"))),
        "budget.limit.amount",
        "not a finite number",
        B,
    ),
    (
        "money fits the contract",
        lambda: dataclasses.replace(B(), budget=Budget(usd("1e19"))),
        "budget.limit.amount",
        "too large",
        B,
    ),
    (
        "max_cost not negative",
        lambda: with_config(B(), "research", max_cost=usd("-0.01")),
        "steps[0].agent_task.max_cost.amount",
        "negative",
        B,
    ),
    (
        "max_cost currency matches the budget",
        lambda: with_config(B(), "research", max_cost=Money(Decimal(1), "EUR")),
        "steps[0].agent_task.max_cost.currency",
        "differs from USD of the budget",
        lambda: with_config(
            dataclasses.replace(B(), budget=Budget(Money(Decimal(5), "EUR"))),
            "research",
            max_cost=Money(Decimal(1), "EUR"),
        ),
    ),
    (
        "max_costs share one currency without a budget",
        lambda: with_config(
            with_config(dataclasses.replace(B(), budget=None), "research", max_cost=usd("1")),
            "revise",
            max_cost=Money(Decimal(1), "EUR"),
        ),
        "steps[3].agent_task.max_cost.currency",
        "differs from USD",
        lambda: with_config(dataclasses.replace(B(), budget=None), "revise", max_cost=usd("2")),
    ),
    # the rest
    (
        "label keys are not blank",
        lambda: dataclasses.replace(B(), labels={" ": "x"}),
        "labels",
        "non-empty",
        B,
    ),
    (
        "informed names someone",
        lambda: with_step(B(), "announce", informed=("",)),
        "steps[7].informed[0]",
        "must name",
        lambda: with_step(B(), "announce", informed=("researcher",)),
    ),
    (
        "on_failure known",
        lambda: with_step(B(), "announce", on_failure="explode"),
        "steps[7].on_failure",
        "unknown value 'explode'",
        B,
    ),
    (
        "budget action known",
        lambda: dataclasses.replace(B(), budget=Budget(usd("1"), "shrug")),  # type: ignore[arg-type]
        "budget.on_exceeded",
        "unknown value",
        B,
    ),
]


@pytest.mark.parametrize(
    ("bad", "field", "words", "good"),
    [pytest.param(bad, field, words, good, id=rule) for rule, bad, field, words, good in CASES],
)
def test_rule(
    bad: Callable[[], ProcessSpec],
    field: str,
    words: str,
    good: Callable[[], ProcessSpec],
) -> None:
    violations = validate(bad())
    matching = [v for v in violations if v.field == field]
    assert matching, f"no violation at {field}: {violations}"
    assert any(words in v.description for v in matching), matching
    assert validate(good()) == []


def test_every_problem_at_once() -> None:
    spec = dataclasses.replace(
        with_config(with_step(B(), "research", timeout=timedelta(0)), "review", approvers=()),
        name="Bad Name",
        budget=Budget(Money(Decimal("-1"), "XYZ")),
    )
    fields = {v.field for v in validate(spec)}
    assert {
        "name",
        "steps[0].timeout",
        "steps[1].human_approval.approvers",
        "budget.limit.amount",
        "budget.limit.currency",
    } <= fields


def test_violations_come_in_definition_order() -> None:
    spec = only(agent("a", "x"), agent("b", "y"), agent("c", "z"))
    assert [v.field for v in validate(spec)] == [f"steps[{i}].depends_on[0]" for i in range(3)]


def test_a_cycle_is_reported_once() -> None:
    spec = only(agent("a", "c"), agent("b", "a"), agent("c", "b"))
    cycles = [v for v in validate(spec) if "cycle" in v.description]
    assert len(cycles) == 1
    assert cycles[0].field == "steps[0].depends_on[0]"


def test_a_long_cycle_lists_its_members() -> None:
    ids = [f"s{i}" for i in range(12)]
    steps = [agent(ids[i], ids[i - 1]) for i in range(12)]
    (cycle,) = [v for v in validate(only(*steps)) if "cycle" in v.description]
    assert "s0, s1" in cycle.description


def test_a_loop_back_through_a_gateway_is_legal() -> None:
    """The 527 shape: verify → gateway → back to implement while not green, at most 3 times."""
    spec = only(
        agent("implement"),
        Step("verify", ToolRunConfig(ActionKind.VERIFY), depends_on=("implement",)),
        Step(
            "green",
            GatewayConfig(
                GatewayType.EXCLUSIVE,
                (
                    Route("release", "{{ steps.verify.output.passed }}"),
                    Route("implement", is_default=True, max_iterations=3),
                ),
            ),
            depends_on=("verify",),
        ),
        agent("release"),
    )
    assert validate(spec) == []


def test_validate_never_raises_on_garbage() -> None:
    spec = ProcessSpec(
        name="x",
        steps=(
            Step("a", GatewayConfig(GatewayType.EXCLUSIVE, ("not a route",))),  # type: ignore[arg-type]
            "not a step",  # type: ignore[arg-type]
            Step("c", object()),  # type: ignore[arg-type]
        ),
        triggers=("sometimes",),  # type: ignore[arg-type]
        budget=Budget("cheap"),  # type: ignore[arg-type]
    )
    fields = {v.field for v in validate(spec)}
    assert {
        "steps[0].gateway.routes[0]",
        "steps[1]",
        "steps[2]",
        "triggers[0]",
        "budget.limit",
    } <= fields


def test_violation_reads_as_path_and_description() -> None:
    assert str(Violation("steps[0].id", "required")) == "steps[0].id: required"
    assert str(Violation("", "empty")) == "empty"


@pytest.mark.parametrize(
    ("base_path", "key", "path"),
    [
        ("", "name", "name"),
        ("steps", 2, "steps[2]"),
        ("steps[2]", "id", "steps[2].id"),
        ("labels", "team/a", 'labels["team/a"]'),
        ("labels", 'say "hi"', 'labels["say \\"hi\\""]'),
    ],
)
def test_field_path(base_path: str, key: str | int, path: str) -> None:
    assert field_path(base_path, key) == path


@pytest.mark.parametrize(
    ("subject", "valid"),
    [
        ("orders", True),
        ("orders.created", True),
        ("orders.*.eu", True),
        ("orders.>", True),
        (">", True),
        ("*", True),
        ("", False),
        ("orders..created", False),
        (".orders", False),
        ("orders.", False),
        ("orders.>.eu", False),
        ("orders.cre*ted", False),
        ("orders.x>", False),
        ("orders created", False),
        (" orders", False),
        ("orders.\tx", False),
    ],
)
def test_subject_filters(subject: str, valid: bool) -> None:
    assert is_valid_subject_filter(subject) is valid


@pytest.mark.parametrize("text", ["09:00", "23:59:59", "2027-02-28T08:15", "2027-02-28T08:15:30"])
def test_until_accepts(text: str) -> None:
    parse_until(text)


@pytest.mark.parametrize(
    "text", ["9:00", "24:00", "12:60", "2027-02-30T08:15", "2027-02-28 08:15", "noon", ""]
)
def test_until_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_until(text)
