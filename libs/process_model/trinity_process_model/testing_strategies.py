"""Hypothesis strategies for process definitions, for the tests of any package.

``process_specs()`` draws random specs that :func:`~trinity_process_model.validation.validate`
accepts: a DAG of steps of every kind (dependencies and forward gateway routes go
forward in definition order), loop routes back to an ancestor with max_iterations,
templates and conditions that compile and read existing steps, amounts in one
currency, and so on.

Test-only: Hypothesis is a development dependency, so nothing in the library imports
this module.

    from trinity_process_model.testing_strategies import process_specs

    @settings(max_examples=50)
    @given(process_specs(max_steps=6))
    def test_something(spec): ...

The leaf strategies are built once at import (building strategies inside a draw is
what makes Hypothesis slow), and step references in templates are drawn as markers
and resolved to real step ids at the end.
"""

from __future__ import annotations

import string
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from hypothesis import strategies as st

from trinity_process_model.model import (
    DEFAULT_KEY_FIELD,
    ActionKind,
    AgentTaskConfig,
    Budget,
    BudgetAction,
    Channel,
    Compensation,
    EventTrigger,
    FailureAction,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    InputDeclaration,
    InputType,
    ManualTrigger,
    MessageTimeoutAction,
    Money,
    NotificationConfig,
    Output,
    ProcessSpec,
    RejectAction,
    RetryPolicy,
    Route,
    ScheduleTrigger,
    Step,
    StepConfig,
    SubProcessConfig,
    TimeoutAction,
    TimerConfig,
    ToolRunConfig,
    Trigger,
    WaitForMessageConfig,
)

__all__ = [
    "CRONS",
    "CURRENCIES",
    "TIMEZONES",
    "durations",
    "free_text",
    "json_objects",
    "money",
    "process_names",
    "process_specs",
    "retry_policies",
    "step_ids",
    "subject_filters",
    "triggers",
]

CURRENCIES = ("USD", "EUR", "JPY", "GBP", "CHF")
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney")
CRONS = ("0 9 * * MON-FRI", "*/5 * * * *", "30 7 1 * *", "0 0 * * 0", "15 14 1 1 *", "@daily")

_REF = "\ue000"
"""Stands for "some step id" in drawn templates until the ids are known."""
_KEYWORDS = frozenset(
    {"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "for", "recursive"}
)
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_INVISIBLE: tuple[Literal["Cs", "Cc", "Zl", "Zp"], ...] = ("Cs", "Cc", "Zl", "Zp")
_LOWER = string.ascii_lowercase
_LOWER_DIGITS = string.ascii_lowercase + string.digits


def _word(first: str, rest: str, max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    return st.builds(
        str.__add__, st.sampled_from(first), st.text(rest, min_size=min_size, max_size=max_size)
    )


_FREE = st.text(st.characters(exclude_categories=_SURROGATES), max_size=30)
_VISIBLE = st.text(
    st.characters(exclude_categories=_INVISIBLE, exclude_characters=_REF),
    min_size=1,
    max_size=12,
).filter(lambda s: bool(s.strip()))
_NAMES = _word(_LOWER_DIGITS, _LOWER_DIGITS + "_-", 20)
_STEP_IDS = _word(_LOWER, _LOWER_DIGITS + "_", 8).filter(lambda s: s not in _KEYWORDS)
_AGENTS = _word(_LOWER, _LOWER_DIGITS + "-", 10)
_ARGUMENT_NAMES = _word(_LOWER + "_", _LOWER_DIGITS + "_", 8)
_CODES = _word(string.ascii_uppercase, string.ascii_uppercase + string.digits + "_", 12)
_EMAILS = st.builds(
    "{}@{}.{}".format,
    st.text(_LOWER_DIGITS + ".", min_size=1, max_size=8),
    st.text(_LOWER, min_size=1, max_size=8),
    st.sampled_from(["com", "org"]),
)
_PATH_PART = st.text(_LOWER_DIGITS + "_-", min_size=1, max_size=8)
_FILES = st.builds(
    lambda parts: "/".join(parts) + ".jsonl", st.lists(_PATH_PART, min_size=1, max_size=3)
)
_URLS = st.builds(
    lambda host, parts: f"https://{host}.example.com" + "".join("/" + p for p in parts),
    st.text(_LOWER, min_size=1, max_size=10),
    st.lists(st.text(_LOWER_DIGITS, min_size=1, max_size=6), max_size=3),
)
_LITERAL = st.text(
    st.characters(exclude_categories=_SURROGATES, exclude_characters="{}%#" + _REF),
    min_size=1,
    max_size=20,
)
_PLACEHOLDERS = st.sampled_from(
    [
        "{{ input.topic }}",
        "{{ input.items | length }}",
        "{{ execution.id }}",
        f"{{{{ steps.{_REF}.output }}}}",
        f"{{{{ steps.{_REF}.output.summary | upper }}}}",
    ]
)
_TEMPLATES = (
    st.lists(_LITERAL | _PLACEHOLDERS, min_size=1, max_size=4)
    .map("".join)
    .filter(lambda s: bool(s.strip()))
)
_OPTIONAL_TEMPLATES = st.just("") | _TEMPLATES
_CONDITIONS = st.sampled_from(
    [
        "{{ input.flag }}",
        "{{ input.count > 3 }}",
        "{{input.topic}} == 'news'",
        f"{{{{ steps.{_REF}.decision == 'approved' }}}}",
        f"{{{{steps.{_REF}.output.score}}}} >= 80",
    ]
)
_OPTIONAL_CONDITIONS = st.just("") | _CONDITIONS
_DURATIONS = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400))
_OPTIONAL_DURATIONS = st.none() | _DURATIONS
_AMOUNTS = st.builds(
    lambda units, places: Decimal(units).scaleb(-places), st.integers(0, 10**14), st.integers(0, 9)
)
_RETRIES = st.builds(
    lambda attempts, initial, extra, factor, codes: RetryPolicy(
        attempts, initial, factor, initial + extra, tuple(codes)
    ),
    st.integers(1, 20),
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(hours=1)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=2)),
    st.floats(1, 10, allow_nan=False, allow_infinity=False),
    st.lists(_CODES, max_size=3),
)
_OPTIONAL_RETRIES = st.none() | _RETRIES
_JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    # -0.0 is not JSON data (JSON and Struct read it back as 0); keep it out.
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: 0.0 if x == 0 else x),
    st.text(st.characters(exclude_categories=_SURROGATES), max_size=15),
)
_JSON_KEYS = st.text(st.characters(exclude_categories=_SURROGATES), max_size=8)
_JSON_OBJECTS = st.dictionaries(
    _JSON_KEYS,
    st.recursive(
        _JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_JSON_KEYS, inner, max_size=3),
        max_leaves=8,
    ),
    max_size=4,
)
_SUBJECTS = st.builds(
    lambda tokens, tail: ".".join(tokens) + (".>" if tail else ""),
    st.lists(
        st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8) | st.just("*"),
        min_size=1,
        max_size=4,
    ),
    st.booleans(),
)
_TRIGGERS: st.SearchStrategy[Trigger] = st.one_of(
    st.just(ManualTrigger()),
    st.builds(
        ScheduleTrigger,
        cron=st.sampled_from(CRONS),
        timezone=st.sampled_from(TIMEZONES),
        input=_JSON_OBJECTS,
    ),
    st.builds(EventTrigger, subject=_SUBJECTS),
)
_UNTIL = st.one_of(
    st.builds(
        lambda h, m, s: f"{h:02d}:{m:02d}" + ("" if s is None else f":{s:02d}"),
        st.integers(0, 23),
        st.integers(0, 59),
        st.none() | st.integers(0, 59),
    ),
    st.datetimes().map(lambda d: d.replace(microsecond=0).isoformat(timespec="seconds")),
)
_KINDS = st.sampled_from(
    [
        "agent_task",
        "human_approval",
        "gateway",
        "timer",
        "notification",
        "tool_run",
        "wait_for_message",
        "sub_process",
    ]
)


def free_text(max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text (no surrogates): names, descriptions, label values."""
    return (
        _FREE
        if max_size == 30
        else st.text(st.characters(exclude_categories=_SURROGATES), max_size=max_size)
    )


def process_names() -> st.SearchStrategy[str]:
    return _NAMES


def step_ids() -> st.SearchStrategy[str]:
    return _STEP_IDS


def durations() -> st.SearchStrategy[timedelta]:
    """Positive durations up to 400 days."""
    return _DURATIONS


def money(currency: str) -> st.SearchStrategy[Money]:
    """Non-negative exact amounts, at most 9 decimal places, written in varied exponents."""
    return _AMOUNTS.map(lambda amount: Money(amount, currency))


def retry_policies() -> st.SearchStrategy[RetryPolicy]:
    return _RETRIES


def json_objects() -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects that survive google.protobuf.Struct (integers within ±2^53)."""
    return _JSON_OBJECTS


def subject_filters() -> st.SearchStrategy[str]:
    return _SUBJECTS


def triggers() -> st.SearchStrategy[Trigger]:
    return _TRIGGERS


# ------------------------------------------------------------------------ specs

# The inputs the generated templates read, with values of their type for defaults.
_TEMPLATE_INPUTS: tuple[tuple[str, InputType, st.SearchStrategy[Any]], ...] = (
    ("topic", InputType.STRING, st.text(max_size=10)),
    ("items", InputType.ARRAY, st.lists(st.integers(-5, 5), max_size=3)),
    ("flag", InputType.BOOLEAN, st.booleans()),
    ("count", InputType.INTEGER, st.integers(-(2**53), 2**53)),
)


@st.composite
def input_declarations(draw: st.DrawFn) -> tuple[InputDeclaration, ...]:
    """Declarations of every input the generated templates read (so they validate)."""
    declared = []
    for name, kind, values in _TEMPLATE_INPUTS:
        has_default = draw(st.booleans())
        declared.append(
            InputDeclaration(
                name=name,
                type=kind,
                required=not has_default and draw(st.booleans()),
                has_default=has_default,
                default=draw(values) if has_default else None,
                description=draw(_FREE),
            )
        )
    return tuple(declared)


def _target(draw: st.DrawFn, channel: Channel) -> str:
    if channel is Channel.EMAIL:
        return draw(_EMAILS)
    if channel is Channel.FILE:
        return draw(_FILES)
    return draw(_URLS)


def _delivery(draw: st.DrawFn) -> tuple[Channel, str, str, str]:
    channel = draw(st.sampled_from(Channel))
    return channel, _target(draw, channel), draw(_TEMPLATES), draw(_OPTIONAL_TEMPLATES)


def _config(draw: st.DrawFn, kind: str, currency: str) -> StepConfig:
    if kind == "agent_task":
        cost = draw(st.none() | _AMOUNTS)
        return AgentTaskConfig(
            agent=draw(_AGENTS),
            message=draw(_TEMPLATES),
            max_cost=None if cost is None else Money(cost, currency),
        )
    if kind == "human_approval":
        return HumanApprovalConfig(
            approvers=tuple(draw(st.lists(_EMAILS, min_size=1, max_size=3, unique=True))),
            on_timeout=draw(st.sampled_from(TimeoutAction)),
            artifacts=tuple(draw(st.lists(_TEMPLATES, max_size=2))),
            title=draw(_OPTIONAL_TEMPLATES),
            reminder_interval=draw(_OPTIONAL_DURATIONS),
            max_reminders=draw(st.integers(0, 10)),
            # Generated gateways may route on any step's decision, which needs CONTINUE.
            on_reject=RejectAction.CONTINUE,
        )
    if kind == "timer":
        zone = draw(st.sampled_from(TIMEZONES))
        if draw(st.booleans()):
            return TimerConfig(duration=draw(_DURATIONS), timezone=zone)
        return TimerConfig(until=draw(_UNTIL), timezone=zone)
    if kind == "notification":
        return NotificationConfig(*_delivery(draw))
    if kind == "wait_for_message":
        subject = draw(st.just("") | _SUBJECTS)
        return WaitForMessageConfig(
            message=draw(_AGENTS),
            correlation_key=draw(_TEMPLATES),
            subject="" if subject.startswith("trinity.") else subject,
            key_field=draw(st.just(DEFAULT_KEY_FIELD) | _ARGUMENT_NAMES),
            on_timeout=draw(st.sampled_from(MessageTimeoutAction)),
        )
    if kind == "sub_process":
        return SubProcessConfig(
            process=draw(st.sampled_from(["child", "review-loop", "summarise"])),
            version=draw(st.sampled_from(["", "1.0", "2.3"])),
            input=draw(st.dictionaries(_ARGUMENT_NAMES, _OPTIONAL_TEMPLATES, max_size=2)),
        )
    return ToolRunConfig(
        action=draw(st.sampled_from(ActionKind)),
        arguments=draw(st.dictionaries(_ARGUMENT_NAMES, _OPTIONAL_TEMPLATES, max_size=3)),
    )


def _compensation(draw: st.DrawFn, config: StepConfig, currency: str) -> Compensation | None:
    """Sometimes a compensation, on the kinds that may declare one."""
    kind = _KIND_NAMES.get(type(config))
    if kind is None or not draw(st.booleans()):
        return None
    body = _config(
        draw, draw(st.sampled_from(["agent_task", "tool_run", "notification"])), currency
    )
    assert isinstance(body, AgentTaskConfig | ToolRunConfig | NotificationConfig)
    return Compensation(body, draw(_OPTIONAL_RETRIES), draw(_OPTIONAL_DURATIONS))


_KIND_NAMES: dict[type, str] = {
    AgentTaskConfig: "agent_task",
    ToolRunConfig: "tool_run",
    NotificationConfig: "notification",
    SubProcessConfig: "sub_process",
}


def _gateway(
    draw: st.DrawFn, ids: list[str], targets: list[int], ancestors: list[int]
) -> GatewayConfig | None:
    """A gateway over the given forward targets, maybe with a loop back to an ancestor."""
    gateway_type = draw(st.sampled_from(GatewayType))
    loops = draw(st.lists(st.sampled_from(ancestors), max_size=1)) if ancestors else []
    if not targets and not loops:
        return None
    legs = [(ids[t], 0) for t in targets] + [(ids[a], draw(st.integers(1, 10))) for a in loops]
    default_leg = -1
    if gateway_type is not GatewayType.PARALLEL and draw(st.booleans()):
        default_leg = draw(st.integers(0, len(legs) - 1))
    routes: list[Route] = []
    for position, (target, iterations) in enumerate(legs):
        if gateway_type is GatewayType.PARALLEL:
            routes.append(Route(target, max_iterations=iterations))
        elif position == default_leg:
            routes.append(Route(target, is_default=True, max_iterations=iterations))
        else:
            routes.append(Route(target, draw(_CONDITIONS), max_iterations=iterations))
    return GatewayConfig(gateway_type, tuple(routes))


def _ancestors(index: int, parents: list[set[int]]) -> list[int]:
    seen: set[int] = set()
    stack = list(parents[index])
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(parents[node])
    return sorted(seen)


class _Refs:
    """Resolves the step-reference markers of drawn text to step ids, round robin."""

    def __init__(self, ids: list[str], start: int) -> None:
        self.ids = ids
        self.next = start

    def __call__(self, text: str) -> str:
        while _REF in text:
            text = text.replace(_REF, self.ids[self.next % len(self.ids)], 1)
            self.next += 1
        return text


def _resolve(value: Any, refs: _Refs) -> Any:
    """A copy of a model value with every marker resolved (dataclasses, tuples, dicts)."""
    if isinstance(value, str):
        return refs(value)
    if isinstance(value, tuple):
        return tuple(_resolve(v, refs) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, refs) for k, v in value.items()}
    if isinstance(value, AgentTaskConfig | HumanApprovalConfig | NotificationConfig | Output):
        return type(value)(**{k: _resolve(v, refs) for k, v in vars(value).items()})
    if isinstance(value, ToolRunConfig):
        return ToolRunConfig(value.action, _resolve(value.arguments, refs))
    if isinstance(value, SubProcessConfig):
        return replace(value, input=_resolve(value.input, refs))
    if isinstance(value, WaitForMessageConfig):
        return replace(value, correlation_key=refs(value.correlation_key))
    if isinstance(value, GatewayConfig):
        return GatewayConfig(value.type, _resolve(value.routes, refs))
    if isinstance(value, Compensation):
        return Compensation(_resolve(value.config, refs), value.retry)
    if isinstance(value, Route):
        return Route(value.target, refs(value.condition), value.is_default, value.max_iterations)
    return value


@st.composite
def process_specs(draw: st.DrawFn, min_steps: int = 1, max_steps: int = 8) -> ProcessSpec:
    """Random specs that validate: every step kind, gateways with forward and loop routes."""
    ids: list[str] = draw(st.lists(_STEP_IDS, min_size=min_steps, max_size=max_steps, unique=True))
    count = len(ids)
    currency = draw(st.sampled_from(CURRENCIES))
    kinds = [draw(_KINDS) for _ in ids]
    parents: list[set[int]] = [set() for _ in ids]
    depends: list[list[int]] = []
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        depends.append(deps)
        parents[i].update(deps)
    forward: dict[int, list[int]] = {}
    for i in range(count):
        if kinds[i] == "gateway":
            later = range(i + 1, count)
            forward[i] = draw(st.lists(st.sampled_from(later), max_size=3)) if later else []
            for target in forward[i]:
                parents[target].add(i)
    refs = _Refs(ids, draw(st.integers(0, count - 1)))
    steps: list[Step] = []
    for i, step_id in enumerate(ids):
        config: StepConfig | None = None
        if kinds[i] == "gateway":
            config = _gateway(draw, ids, forward[i], _ancestors(i, parents))
        if config is None:
            kind = "agent_task" if kinds[i] == "gateway" else kinds[i]
            config = _config(draw, kind, currency)
        steps.append(
            Step(
                id=step_id,
                config=_resolve(config, refs),
                name=draw(st.just("") | _VISIBLE | _FREE),
                depends_on=tuple(ids[d] for d in depends[i]),
                condition=refs(draw(_OPTIONAL_CONDITIONS)),
                retry=draw(_OPTIONAL_RETRIES),
                # An approval's timeout is its deadline: required there, optional elsewhere.
                timeout=(
                    draw(_DURATIONS)
                    if isinstance(config, HumanApprovalConfig)
                    else draw(_OPTIONAL_DURATIONS)
                ),
                on_failure=draw(st.sampled_from(FailureAction)),
                informed=tuple(draw(st.lists(_VISIBLE, max_size=2))),
                compensate=_resolve(_compensation(draw, config, currency), refs),
            )
        )
    outputs = tuple(
        _resolve(Output(*_delivery(draw)), refs) for _ in range(draw(st.integers(0, 2)))
    )
    budget = None
    if draw(st.booleans()):
        budget = Budget(Money(draw(_AMOUNTS), currency), draw(st.sampled_from(BudgetAction)))
    inputs: tuple[InputDeclaration, ...] = draw(st.just(()) | input_declarations())
    triggers = tuple(draw(st.lists(_TRIGGERS, max_size=3)))
    if inputs:  # random schedule input would not match the declarations
        triggers = tuple(
            ScheduleTrigger(t.cron, t.timezone, {}) if isinstance(t, ScheduleTrigger) else t
            for t in triggers
        )
        if any(d.required for d in inputs):
            triggers = tuple(t for t in triggers if not isinstance(t, ScheduleTrigger))
    return ProcessSpec(
        name=draw(_NAMES),
        steps=tuple(steps),
        description=draw(_FREE),
        triggers=triggers,
        outputs=outputs,
        budget=budget,
        default_retry=draw(_OPTIONAL_RETRIES),
        labels=draw(st.dictionaries(_VISIBLE, _FREE, max_size=3)),
        inputs=inputs,
    )
