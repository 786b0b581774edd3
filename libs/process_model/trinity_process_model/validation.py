"""Validation of a process definition: every problem at once, each with the path to it.

``validate(spec)`` returns a list of :class:`Violation`; empty means publishable. A
path names the offending element with the protobuf (and YAML) field names, for
example ``steps[2].gateway.routes[0].target``. Validation never raises on a bad spec.

Every rule, and why, is listed in FORMAT.md ("Validation rules"). Templates and
conditions are compiled in the sandbox of :mod:`trinity_process_model.expressions`;
the step graph (references, cycles and loops) comes from
:mod:`trinity_process_model.graph`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from trinity_process_model.durations import MAX_DURATION, format_duration
from trinity_process_model.expressions import (
    ExpressionCheck,
    ExpressionError,
    check_condition,
    check_template,
)
from trinity_process_model.graph import ProcessGraph
from trinity_process_model.model import (
    COMPENSABLE_KINDS,
    MAX_FOR_EACH_ITEMS,
    ActionKind,
    AgentTaskConfig,
    BudgetAction,
    Channel,
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
    SubProcessConfig,
    TimeoutAction,
    TimerConfig,
    ToolRunConfig,
    WaitForMessageConfig,
)
from trinity_process_model.money import money_problems

__all__ = [
    "CONTEXT_NAMES",
    "MAX_JSON_INTEGER",
    "MAX_UINT32",
    "MESSAGE_NAME_PATTERN",
    "PROCESS_NAME_PATTERN",
    "STEP_ID_PATTERN",
    "Violation",
    "field_path",
    "is_valid_subject_filter",
    "is_valid_timezone",
    "parse_until",
    "validate",
]

PROCESS_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
"""A process name: lowercase letters, digits, '-' and '_', starting with a letter or digit."""
STEP_ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
"""A step id is an identifier, so templates can read ``steps.<id>.output``."""
ARGUMENT_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MESSAGE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A message name (what SignalExecution and wait_for_message steps correlate on)."""
VERSION_PATTERN = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,2}")
"""A published version, as the definition service numbers them (1, 1.2)."""
FAILURE_CODE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]*")
CONTEXT_NAMES = frozenset({"input", "steps", "execution", "process"})
"""What templates and conditions can read (the execution engine's expression context)."""
COMPENSATION_NAMES = frozenset({"step"})
"""What a compensation's templates read besides the context: the compensated step."""
FOR_EACH_NAMES = frozenset({"item", "item_index"})
"""What a for_each's input templates read besides the context: the item and its index."""
MAX_UINT32 = 2**32 - 1
MAX_JSON_INTEGER = 2**53
MAX_STEPS = 2_000
"""Most steps a process may have: validating (templates, graph) costs time per step, and
a request of a few megabytes could otherwise hold a hundred thousand of them."""
MAX_INPUT_DEPTH = 24
"""Deepest nesting of input data, the input mapping being level 1 (the services' edge
refuses deeper Structs: protobuf cannot copy them into executions and facts)."""
"""Integers of schedule input travel as doubles (google.protobuf.Struct): exact up to 2^53."""

_IDENTIFIER_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNTIL_TIME = re.compile(r"\d{2}:\d{2}(?::\d{2})?")
_UNTIL_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CRON_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)


@dataclass(frozen=True)
class Violation:
    """One problem of a definition: the path to the offending element and what is wrong."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


def field_path(base: str, key: str | int) -> str:
    """``steps`` + 2 → ``steps[2]``; ``steps[2]`` + ``id`` → ``steps[2].id``.

    Map keys that are not identifiers are quoted: ``labels["team/a"]``.
    """
    if isinstance(key, int):
        return f"{base}[{key}]"
    if not _IDENTIFIER_KEY.fullmatch(key):
        key_text = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{base}[{key_text}]"
    return f"{base}.{key}" if base else key


def validate(spec: ProcessSpec) -> list[Violation]:
    """Every problem of `spec`, in definition order; empty when it can be published."""
    if len(spec.steps) > MAX_STEPS:  # before any per-step work: bounded time per call
        return [
            Violation(
                "steps", f"a process has at most {MAX_STEPS} steps, this one has {len(spec.steps)}"
            )
        ]
    return _Validator(spec).run()


@lru_cache(maxsize=1024)
def is_valid_timezone(name: str) -> bool:
    """Whether `name` is an IANA timezone key known to this machine ("Europe/Berlin")."""
    if not name or not isinstance(name, str):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def parse_until(text: str) -> time | datetime:
    """A timer's wall-clock target: "HH:MM[:SS]" (a time) or "YYYY-MM-DDTHH:MM[:SS]"."""
    if _UNTIL_TIME.fullmatch(text):
        return time.fromisoformat(text)
    if _UNTIL_DATETIME.fullmatch(text):
        return datetime.fromisoformat(text)
    raise ValueError(f"bad time {text!r}: write 'HH:MM', 'HH:MM:SS' or 'YYYY-MM-DDTHH:MM[:SS]'")


def is_valid_subject_filter(subject: str) -> bool:
    """Whether `subject` is a NATS subject filter: dot-separated tokens, '*' for one
    token, '>' as the last token for the rest ("orders.created.>", "orders.*.eu")."""
    if not subject or subject != subject.strip():
        return False
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if not token or any(c.isspace() for c in token):
            return False
        if token == ">":
            if index != len(tokens) - 1:
                return False
        elif token != "*" and ("*" in token or ">" in token):
            return False
    return True


def _describe(value: object) -> str:
    return type(value).__name__


def _item_names(config: AgentTaskConfig | ToolRunConfig | SubProcessConfig) -> frozenset[str]:
    """What the step's templates read besides the context: the item, with for_each."""
    return FOR_EACH_NAMES if isinstance(config.for_each, str) and config.for_each else frozenset()


class _Validator:
    """One pass over a spec, collecting violations in definition order."""

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.out: list[Violation] = []
        self.step_ids: set[str] = set()
        self.currency: str | None = None
        self.currency_source = ""
        # Names of the declared inputs; None when the process declares none (unchecked).
        self.declared_inputs: frozenset[str] | None = None
        # Names templates may read besides the context, while a compensation is checked.
        self._extra_names: frozenset[str] = frozenset()

    def add(self, path: str, description: str) -> None:
        self.out.append(Violation(path, description))

    # ------------------------------------------------------------------ process

    def run(self) -> list[Violation]:
        spec = self.spec
        self._name(spec.name)
        steps = tuple(spec.steps)
        self.step_ids = {s.id for s in steps if isinstance(s, Step)}
        if not steps:
            self.add("steps", "a process needs at least one step")
        self._labels(spec.labels)
        self._inputs(spec)
        for index, trigger in enumerate(spec.triggers):
            self._trigger(field_path("triggers", index), trigger)
        if spec.budget is not None:
            self._money("budget.limit", spec.budget.limit)
            if isinstance(spec.budget.limit, Money):
                self.currency, self.currency_source = spec.budget.limit.currency, "the budget"
            if not isinstance(spec.budget.on_exceeded, BudgetAction):
                self._bad_enum("budget.on_exceeded", spec.budget.on_exceeded, BudgetAction)
        if spec.default_retry is not None:
            self._retry("default_retry", spec.default_retry)
        self._step_ids(steps)
        for index, step in enumerate(steps):
            path = field_path("steps", index)
            if not isinstance(step, Step):
                self.add(path, f"expected a Step, got {_describe(step)}")
                continue
            self._step(path, step)
        for index, output in enumerate(spec.outputs):
            self._delivery(field_path("outputs", index), output)
        if steps and all(_graph_ready(s) for s in steps):
            self._graph(spec)
        return self.out

    def _name(self, name: str) -> None:
        if not name:
            self.add("name", "the process name is required")
        elif not PROCESS_NAME_PATTERN.fullmatch(name):
            self.add(
                "name",
                f"bad process name {name!r}: use lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit (at most 128 characters)",
            )

    def _labels(self, labels: Mapping[str, str]) -> None:
        for key, value in labels.items():
            if not isinstance(key, str) or not key.strip():
                self.add("labels", "label keys must be non-empty text")
            elif not isinstance(value, str):
                self.add(
                    field_path("labels", key), f"label values are text, got {_describe(value)}"
                )

    # ------------------------------------------------------------------- inputs

    def _inputs(self, spec: ProcessSpec) -> None:
        from trinity_process_model.inputs import type_problem  # it imports this module

        seen: set[str] = set()
        for index, declaration in enumerate(spec.inputs):
            path = field_path("inputs", declaration.name or str(index))
            if not isinstance(declaration, InputDeclaration):
                self.add(path, f"expected an InputDeclaration, got {_describe(declaration)}")
                continue
            if not _IDENTIFIER_KEY.fullmatch(declaration.name) or len(declaration.name) > 128:
                self.add(
                    path,
                    f"bad input name {declaration.name!r}: an identifier (letters, digits, '_', "
                    "not starting with a digit), so templates can read input.<name>",
                )
            elif declaration.name in seen:
                self.add(path, f"input {declaration.name!r} is declared twice")
            seen.add(declaration.name)
            if not isinstance(declaration.type, InputType):
                self._bad_enum(f"{path}.type", declaration.type, InputType)
                continue
            if declaration.has_default:
                if declaration.required:
                    self.add(
                        f"{path}.default",
                        "a required input has no default: drop one of required and default",
                    )
                self._json_value(f"{path}.default", declaration.name, declaration.default)
                problem = type_problem(declaration.type, declaration.default)
                if problem:
                    self.add(f"{path}.default", f"the default {problem}")
        self.declared_inputs = frozenset(seen) if spec.inputs else None

    def _schedule_input(self, path: str, values: Mapping[str, Any]) -> None:
        from trinity_process_model.inputs import check_input  # it imports this module

        if self.spec.inputs:
            for problem in check_input(self.spec.inputs, values)[1]:
                self.add(f"{path}{problem.field.removeprefix('input')}", problem.description)

    # ----------------------------------------------------------------- triggers

    def _trigger(self, path: str, trigger: object) -> None:
        if isinstance(trigger, ManualTrigger):
            return
        if isinstance(trigger, ScheduleTrigger):
            base = f"{path}.schedule"
            self._cron(f"{base}.cron", trigger.cron)
            self._timezone(f"{base}.timezone", trigger.timezone)
            if not isinstance(trigger.input, Mapping):
                self.add(f"{base}.input", "schedule input must be a mapping")
            else:
                for key, value in trigger.input.items():
                    self._json_value(field_path(f"{base}.input", str(key)), key, value)
                self._schedule_input(f"{base}.input", trigger.input)
            return
        if isinstance(trigger, EventTrigger):
            if not trigger.subject:
                self.add(f"{path}.event.subject", "the event subject is required")
            elif not is_valid_subject_filter(trigger.subject):
                self.add(
                    f"{path}.event.subject",
                    f"bad NATS subject filter {trigger.subject!r}: dot-separated tokens without "
                    "spaces; '*' stands for one whole token, '>' for the rest (last token only)",
                )
            return
        self.add(path, f"unknown trigger {_describe(trigger)}")

    def _cron(self, path: str, cron: str) -> None:
        if not cron.strip():
            self.add(path, "the cron expression is required")
            return
        fields = cron.split()
        if cron.strip() in _CRON_ALIASES:
            return
        if len(fields) != 5:
            self.add(
                path,
                f"bad cron expression {cron!r}: five fields (minute hour day month weekday), "
                "like '0 9 * * MON-FRI'",
            )
        elif not croniter.is_valid(cron):
            self.add(path, f"bad cron expression {cron!r}")

    def _json_value(self, path: str, key: object, value: Any, depth: int = 0) -> None:
        if not isinstance(key, str):
            self.add(path, f"keys must be text, got {_describe(key)}")
            return
        # ``depth`` 0 is a value of the input mapping (level 1): its lists and maps are level 2.
        if isinstance(value, list | tuple | Mapping) and depth + 2 > MAX_INPUT_DEPTH:
            self.add(path, f"input nests deeper than {MAX_INPUT_DEPTH} levels")
            return
        if value is None or isinstance(value, bool | str):
            return
        if isinstance(value, int):
            if abs(value) > MAX_JSON_INTEGER:
                self.add(path, f"integer {value} is beyond ±2^53 and would lose precision")
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.add(path, f"number {value} is not finite")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                self._json_value(field_path(path, index), "", item, depth + 1)
        elif isinstance(value, Mapping):
            for sub_key, item in value.items():
                self._json_value(field_path(path, str(sub_key)), sub_key, item, depth + 1)
        else:
            self.add(
                path,
                f"{_describe(value)} is not a JSON value (text, number, boolean, null, list, "
                "mapping)",
            )

    # -------------------------------------------------------------------- steps

    def _step_ids(self, steps: tuple[Step, ...]) -> None:
        first: dict[str, int] = {}
        for index, step in enumerate(steps):
            if not isinstance(step, Step):
                continue
            path = f"steps[{index}].id"
            if not step.id:
                self.add(path, "the step id is required")
            elif not STEP_ID_PATTERN.fullmatch(step.id):
                self.add(
                    path,
                    f"bad step id {step.id!r}: use letters, digits and '_', not starting with a "
                    "digit (templates read it as steps.<id>)",
                )
            if step.id in first:
                self.add(path, f"duplicate step id {step.id!r} (also steps[{first[step.id]}].id)")
            else:
                first[step.id] = index

    def _step(self, path: str, step: Step) -> None:
        seen: set[str] = set()
        for index, ref in enumerate(step.depends_on):
            ref_path = f"{path}.depends_on[{index}]"
            if ref == step.id:
                self.add(ref_path, f"step {step.id!r} cannot depend on itself")
            elif ref not in self.step_ids:
                self.add(ref_path, f"unknown step {ref!r}")
            elif ref in seen:
                self.add(ref_path, f"{ref!r} is listed twice")
            seen.add(ref)
        if step.condition:
            self._condition(f"{path}.condition", step.condition)
        if step.retry is not None:
            self._retry(f"{path}.retry", step.retry)
        if step.timeout is not None:
            self._duration(f"{path}.timeout", step.timeout)
        if not isinstance(step.on_failure, FailureAction):
            self._bad_enum(f"{path}.on_failure", step.on_failure, FailureAction)
        for index, who in enumerate(step.informed):
            if not isinstance(who, str) or not who.strip():
                self.add(f"{path}.informed[{index}]", "must name an agent or a person")
        config = step.config
        if isinstance(config, AgentTaskConfig):
            self._agent_task(f"{path}.agent_task", config)
        elif isinstance(config, HumanApprovalConfig):
            self._approval(f"{path}.human_approval", config)
            if step.timeout is None:
                # The deadline is part of the approval (what happens on_timeout needs it).
                self.add(f"{path}.timeout", "an approval step needs a timeout (its deadline)")
        elif isinstance(config, GatewayConfig):
            self._gateway(f"{path}.gateway", step.id, config)
        elif isinstance(config, TimerConfig):
            self._timer(f"{path}.timer", config)
        elif isinstance(config, NotificationConfig):
            self._delivery(f"{path}.notification", config)
        elif isinstance(config, ToolRunConfig):
            self._tool_run(f"{path}.tool_run", config)
        elif isinstance(config, WaitForMessageConfig):
            self._wait_for_message(f"{path}.wait_for_message", config)
        elif isinstance(config, SubProcessConfig):
            self._sub_process(f"{path}.sub_process", config)
        else:
            self.add(
                path,
                f"unknown step kind {_describe(config)}: one of agent_task, human_approval, "
                "gateway, timer, notification, tool_run, wait_for_message, sub_process",
            )
        if step.compensate is not None:
            self._compensation(f"{path}.compensate", step)

    def _compensation(self, path: str, step: Step) -> None:
        compensation = step.compensate
        assert compensation is not None
        compensable = isinstance(
            step.config, AgentTaskConfig | ToolRunConfig | NotificationConfig | SubProcessConfig
        )
        if not compensable:
            kind = type(step.config).__name__
            with contextlib.suppress(KeyError):
                kind = str(step.kind)
            self.add(
                path,
                f"a {kind} step changes nothing a compensation could undo; only "
                f"{', '.join(sorted(COMPENSABLE_KINDS))} steps can declare one",
            )
            return
        if compensation.retry is not None:
            self._retry(f"{path}.retry", compensation.retry)
        if compensation.timeout is not None:
            self._duration(f"{path}.timeout", compensation.timeout)
        config = compensation.config
        if isinstance(config, AgentTaskConfig | ToolRunConfig) and config.for_each:
            kind = "agent_task" if isinstance(config, AgentTaskConfig) else "tool_run"
            self.add(
                f"{path}.{kind}.for_each",
                "a compensation undoes one completion: it runs once, without for_each",
            )
            return
        self._extra_names = COMPENSATION_NAMES
        try:
            if isinstance(config, AgentTaskConfig):
                self._agent_task(f"{path}.agent_task", config)
            elif isinstance(config, ToolRunConfig):
                self._tool_run(f"{path}.tool_run", config)
            elif isinstance(config, NotificationConfig):
                self._delivery(f"{path}.notification", config)
            else:
                self.add(
                    path,
                    f"a compensation is an agent_task, a tool_run or a notification, "
                    f"not {_describe(config)}",
                )
        finally:
            self._extra_names = frozenset()

    def _agent_task(self, path: str, config: AgentTaskConfig) -> None:
        if not config.agent.strip():
            self.add(f"{path}.agent", "the agent name is required")
        if not isinstance(config.message, str) or not config.message.strip():
            self.add(f"{path}.message", "the message is required")
        else:
            self._expression(f"{path}.message", config.message, check_template, _item_names(config))
        self._for_each(path, config)
        if config.max_cost is not None:
            self._money(f"{path}.max_cost", config.max_cost)
            self._same_currency(f"{path}.max_cost.currency", config.max_cost)

    def _approval(self, path: str, config: HumanApprovalConfig) -> None:
        if not config.approvers:
            self.add(f"{path}.approvers", "an approval needs at least one approver")
        seen: set[str] = set()
        for index, approver in enumerate(config.approvers):
            if not approver.strip():
                self.add(f"{path}.approvers[{index}]", "must name an approver")
            elif approver in seen:
                self.add(f"{path}.approvers[{index}]", f"{approver!r} is listed twice")
            seen.add(approver)
        if not isinstance(config.on_timeout, TimeoutAction):
            self._bad_enum(f"{path}.on_timeout", config.on_timeout, TimeoutAction)
        if not isinstance(config.on_reject, RejectAction):
            self._bad_enum(f"{path}.on_reject", config.on_reject, RejectAction)
        for index, artifact in enumerate(config.artifacts):
            self._required_template(f"{path}.artifacts[{index}]", artifact, "an artifact")
        if config.title:
            self._template(f"{path}.title", config.title)
        if config.reminder_interval is not None:
            self._duration(f"{path}.reminder_interval", config.reminder_interval)
        self._uint32(f"{path}.max_reminders", config.max_reminders)

    def _gateway(self, path: str, step_id: str, config: GatewayConfig) -> None:
        kind = config.type
        if not isinstance(kind, GatewayType):
            self._bad_enum(f"{path}.type", kind, GatewayType)
        if not config.routes:
            self.add(f"{path}.routes", "a gateway needs at least one route")
        default_at: int | None = None
        for index, route in enumerate(config.routes):
            rpath = f"{path}.routes[{index}]"
            if not isinstance(route, Route):
                self.add(rpath, f"expected a Route, got {_describe(route)}")
                continue
            self._route_target(rpath, step_id, route)
            self._uint32(f"{rpath}.max_iterations", route.max_iterations)
            if kind is GatewayType.PARALLEL:
                if route.condition:
                    self.add(
                        f"{rpath}.condition", "a parallel gateway takes every route: no conditions"
                    )
                if route.is_default:
                    self.add(f"{rpath}.is_default", "a parallel gateway has no default route")
                continue
            if route.is_default:
                if default_at is not None:
                    self.add(
                        f"{rpath}.is_default",
                        f"a gateway has at most one default route (also routes[{default_at}])",
                    )
                else:
                    default_at = index
                if route.condition:
                    self.add(f"{rpath}.condition", "the default route has no condition")
            elif not route.condition.strip():
                self.add(
                    f"{rpath}.condition",
                    f"a route of an {kind} gateway needs a condition (or is_default: true)",
                )
            else:
                self._condition(f"{rpath}.condition", route.condition)
                self._routes_on_rejection(f"{rpath}.condition", route.condition)

    def _routes_on_rejection(self, path: str, condition: str) -> None:
        """A gateway may route on an approval's decision only when a rejection does not
        fail that approval (``on_reject: continue``): otherwise the route never sees it."""
        try:
            fields = check_condition(condition).step_fields
        except ExpressionError:
            return  # reported by _condition
        approvals = {
            s.id: s.config
            for s in self.spec.steps
            if isinstance(s, Step) and isinstance(s.config, HumanApprovalConfig)
        }
        for step_id, field in sorted(fields):
            config = approvals.get(step_id)
            if field == "decision" and config is not None and config.on_reject is RejectAction.FAIL:
                self.add(
                    path,
                    f"routes on steps.{step_id}.decision, but a rejection fails {step_id!r} "
                    "and stops the path: add on_reject: continue to its human_approval "
                    "to route on the decision",
                )

    def _route_target(self, rpath: str, step_id: str, route: Route) -> None:
        if not route.target:
            self.add(f"{rpath}.target", "the route target is required")
        elif route.target == step_id:
            self.add(f"{rpath}.target", "a gateway cannot route to itself")
        elif route.target not in self.step_ids:
            self.add(f"{rpath}.target", f"unknown step {route.target!r}")

    def _timer(self, path: str, config: TimerConfig) -> None:
        if (config.duration is None) == (not config.until):
            self.add(
                path,
                "a timer waits for a duration or until a time: give exactly one of duration "
                "and until",
            )
        if config.duration is not None:
            self._duration(f"{path}.duration", config.duration)
        if config.until:
            try:
                parse_until(config.until)
            except ValueError as exc:
                self.add(f"{path}.until", str(exc))
        self._timezone(f"{path}.timezone", config.timezone)

    def _delivery(self, path: str, config: NotificationConfig | Output) -> None:
        channel = config.channel
        target = config.target
        if not isinstance(channel, Channel):
            self._bad_enum(f"{path}.channel", channel, Channel)
        if not target.strip():
            self.add(f"{path}.target", "the target is required")
        elif isinstance(channel, Channel):
            problem = _target_problem(channel, target)
            if problem:
                self.add(f"{path}.target", problem)
        self._required_template(f"{path}.message", config.message, "the message")
        if config.subject:
            self._template(f"{path}.subject", config.subject)

    def _tool_run(self, path: str, config: ToolRunConfig) -> None:
        if not isinstance(config.action, ActionKind):
            self._bad_enum(f"{path}.action", config.action, ActionKind)
        for name, value in config.arguments.items():
            apath = field_path(f"{path}.arguments", str(name))
            if not isinstance(name, str) or not ARGUMENT_NAME_PATTERN.fullmatch(name):
                self.add(apath, f"bad argument name {name!r}: letters, digits and '_'")
            if not isinstance(value, str):
                self.add(apath, f"argument values are templates (text), got {_describe(value)}")
            else:
                self._expression(apath, value, check_template, _item_names(config))
        self._for_each(path, config)

    def _sub_process(self, path: str, config: SubProcessConfig) -> None:
        if not isinstance(config.process, str) or not PROCESS_NAME_PATTERN.fullmatch(
            config.process
        ):
            self.add(
                f"{path}.process",
                f"bad process name {config.process!r}: lowercase letters, digits, '_' and '-' "
                "(required)",
            )
        elif config.process == self.spec.name:
            self.add(
                f"{path}.process",
                f"process {config.process!r} would start itself; a process cannot call itself",
            )
        if config.version and not VERSION_PATTERN.fullmatch(config.version):
            self.add(f"{path}.version", f"bad version {config.version!r}: like 1.2")
        item_names = _item_names(config)
        for name, value in config.input.items():
            ipath = field_path(f"{path}.input", str(name))
            if not isinstance(name, str) or not ARGUMENT_NAME_PATTERN.fullmatch(name):
                self.add(ipath, f"bad input name {name!r}: letters, digits and '_'")
            if not isinstance(value, str):
                self.add(ipath, f"input values are templates (text), got {_describe(value)}")
            else:
                self._expression(ipath, value, check_template, item_names)
        self._for_each(path, config)

    def _for_each(
        self, path: str, config: AgentTaskConfig | ToolRunConfig | SubProcessConfig
    ) -> None:
        """The keys of a step that can run once per item (the same for every body)."""
        if not isinstance(config.for_each, str):
            self.add(f"{path}.for_each", f"an expression (text), got {_describe(config.for_each)}")
            return
        if config.for_each:
            self._expression(f"{path}.for_each", config.for_each, check_condition)
        for name in ("max_concurrency", "max_items", "tolerated_failures"):
            self._uint32(f"{path}.{name}", getattr(config, name))
        if isinstance(config.max_items, int) and config.max_items > MAX_FOR_EACH_ITEMS:
            self.add(f"{path}.max_items", f"at most {MAX_FOR_EACH_ITEMS} items")
        if not config.for_each:
            for name in ("max_concurrency", "max_items", "tolerated_failures"):
                if getattr(config, name):
                    self.add(f"{path}.{name}", "only with for_each")

    def _wait_for_message(self, path: str, config: WaitForMessageConfig) -> None:
        if not MESSAGE_NAME_PATTERN.fullmatch(config.message):
            self.add(
                f"{path}.message",
                f"bad message name {config.message!r}: letters, digits, '.', '_' and '-', "
                "at most 128 characters (required)",
            )
        self._required_template(
            f"{path}.correlation_key", config.correlation_key, "the correlation key"
        )
        if config.subject and (
            not is_valid_subject_filter(config.subject) or config.subject.startswith("trinity.")
        ):
            self.add(
                f"{path}.subject",
                f"bad NATS subject {config.subject!r}: dot-separated tokens without spaces "
                "('*' and '>' allowed), outside the engine's own trinity.> subjects",
            )
        if not ARGUMENT_NAME_PATTERN.fullmatch(config.key_field):
            self.add(
                f"{path}.key_field",
                f"bad key field {config.key_field!r}: a JSON field name (letters, digits, '_')",
            )
        if not isinstance(config.on_timeout, MessageTimeoutAction):
            self._bad_enum(f"{path}.on_timeout", config.on_timeout, MessageTimeoutAction)

    # ------------------------------------------------------------------- values

    def _retry(self, path: str, retry: RetryPolicy) -> None:
        if not isinstance(retry.max_attempts, int) or retry.max_attempts < 1:
            self.add(
                f"{path}.max_attempts",
                f"max_attempts counts the first attempt: at least 1, got {retry.max_attempts}",
            )
        else:
            self._uint32(f"{path}.max_attempts", retry.max_attempts)
        initial_ok = self._duration(f"{path}.initial_backoff", retry.initial_backoff)
        max_ok = self._duration(f"{path}.max_backoff", retry.max_backoff)
        multiplier = retry.backoff_multiplier
        if (
            not isinstance(multiplier, int | float)
            or not math.isfinite(multiplier)
            or multiplier < 1
        ):
            self.add(
                f"{path}.backoff_multiplier",
                f"the backoff multiplier must be at least 1, got {multiplier}",
            )
        if initial_ok and max_ok and retry.max_backoff < retry.initial_backoff:
            self.add(
                f"{path}.max_backoff",
                f"max_backoff {format_duration(retry.max_backoff)} is shorter than "
                f"initial_backoff {format_duration(retry.initial_backoff)}",
            )
        for index, code in enumerate(retry.non_retryable_codes):
            if not isinstance(code, str) or not FAILURE_CODE_PATTERN.fullmatch(code):
                self.add(
                    f"{path}.non_retryable_codes[{index}]",
                    f"failure codes are UPPER_SNAKE like CREDENTIALS_MISSING, got {code!r}",
                )

    def _duration(self, path: str, value: timedelta) -> bool:
        if not isinstance(value, timedelta):
            self.add(path, f"expected a duration, got {_describe(value)}")
            return False
        if value <= timedelta(0):
            self.add(path, f"durations must be positive, got {format_duration(value)}")
            return False
        if value > MAX_DURATION:
            self.add(path, "durations are at most 10,000 years")
            return False
        return True

    def _uint32(self, path: str, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            self.add(path, f"expected a whole number, got {_describe(value)}")
        elif value < 0:
            self.add(path, f"must not be negative, got {value}")
        elif value > MAX_UINT32:
            self.add(path, f"must be at most {MAX_UINT32}, got {value}")

    def _money(self, path: str, money: Money) -> None:
        if not isinstance(money, Money):
            self.add(path, f"expected money, got {_describe(money)}")
            return
        for sub, problem in money_problems(money):
            self.add(f"{path}.{sub}", problem)

    def _same_currency(self, path: str, money: Money) -> None:
        if not isinstance(money, Money):
            return
        if self.currency is None:
            self.currency, self.currency_source = money.currency, path.rsplit(".", 1)[0]
        elif money.currency != self.currency:
            self.add(
                path,
                f"currency {money.currency} differs from {self.currency} of "
                f"{self.currency_source}: a process counts cost in one currency",
            )

    def _timezone(self, path: str, name: str) -> None:
        if not is_valid_timezone(name):
            self.add(path, f"unknown timezone {name!r}: use an IANA name like 'Europe/Berlin'")

    def _bad_enum(self, path: str, value: object, enum: type[StrEnum]) -> None:
        allowed = ", ".join(str(v) for v in enum)
        self.add(path, f"unknown value {value!r}: one of {allowed}")

    # -------------------------------------------------------------- expressions

    def _required_template(self, path: str, text: str, what: str) -> None:
        if not isinstance(text, str) or not text.strip():
            self.add(path, f"{what} is required")
        else:
            self._template(path, text)

    def _template(self, path: str, text: str) -> None:
        self._expression(path, text, check_template)

    def _condition(self, path: str, text: str) -> None:
        self._expression(path, text, check_condition)

    def _expression(
        self,
        path: str,
        text: str,
        compile_: Callable[[str], ExpressionCheck],
        extra_names: frozenset[str] = frozenset(),
    ) -> None:
        try:
            compiled = compile_(text)
        except ExpressionError as exc:
            self.add(path, str(exc))
            return
        extra_names = extra_names | self._extra_names
        for name in sorted(compiled.names - CONTEXT_NAMES - extra_names):
            self.add(
                path,
                f"reads {name!r}, which is not in the context: {', '.join(sorted(CONTEXT_NAMES))}",
            )
        for ref in sorted(compiled.step_refs):
            if ref not in self.step_ids:
                self.add(path, f"reads steps.{ref}, but there is no step {ref!r}")
        if self.declared_inputs is not None:
            for name in sorted(compiled.input_refs - self.declared_inputs):
                self.add(
                    path,
                    f"reads input.{name}, but the process declares no input {name!r} "
                    f"(inputs: {', '.join(sorted(self.declared_inputs)) or 'none'})",
                )

    # -------------------------------------------------------------------- graph

    def _graph(self, spec: ProcessSpec) -> None:
        """Cycles, and max_iterations on routes that do not loop."""
        graph = ProcessGraph.build(spec)
        index_of = {step_id: graph.position(step_id) for step_id in graph.step_ids}
        steps = {step.id: (i, step) for i, step in reversed(list(enumerate(spec.steps)))}
        for i, step in enumerate(spec.steps):
            if not isinstance(step.config, GatewayConfig) or steps[step.id][0] != i:
                continue
            for r, route in enumerate(step.config.routes):
                if (
                    isinstance(route, Route)
                    and isinstance(route.max_iterations, int)
                    and route.max_iterations > 0
                    and route.target in index_of
                    and route.target != step.id
                    and not graph.is_loop_route(step.id, route.target)
                ):
                    self.add(
                        f"steps[{i}].gateway.routes[{r}].max_iterations",
                        f"max_iterations applies to a loop, but {route.target!r} does not lead "
                        f"back to {step.id!r}",
                    )
        for cycle in graph.find_cycles():
            if len(cycle) < 2:
                continue  # a step depending on itself is reported at its depends_on
            self._cycle(cycle, steps)

    def _cycle(self, cycle: list[str], steps: Mapping[str, tuple[int, Step]]) -> None:
        members = set(cycle)
        shown = " → ".join([*cycle, cycle[0]]) if len(cycle) <= 8 else ", ".join(cycle)
        description = (
            f"cycle through {shown}: a loop must go back through a gateway route that "
            "declares max_iterations"
        )
        # Point at the edge that goes back in definition order: usually the culprit.
        for step_id in reversed(cycle):
            index, step = steps[step_id]
            if isinstance(step.config, GatewayConfig):
                for r, route in enumerate(step.config.routes):
                    if route.target in members and steps[route.target][0] < index:
                        self.add(f"steps[{index}].gateway.routes[{r}]", description)
                        return
            for k, ref in enumerate(step.depends_on):
                if ref in members and steps[ref][0] > index:
                    self.add(f"steps[{index}].depends_on[{k}]", description)
                    return
        first_index = steps[cycle[0]][0]
        self.add(f"steps[{first_index}]", description)


def _graph_ready(step: object) -> bool:
    """Whether the graph can be built over this step (model types where it looks)."""
    if not isinstance(step, Step) or not all(isinstance(d, str) for d in step.depends_on):
        return False
    if isinstance(step.config, GatewayConfig):
        return all(isinstance(r, Route) and isinstance(r.target, str) for r in step.config.routes)
    return True


def _target_problem(channel: Channel, target: str) -> str | None:
    if channel in (Channel.WEBHOOK, Channel.SLACK):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"a {channel} target is an http(s) URL, got {target!r}"
    elif channel is Channel.EMAIL:
        addresses = [a.strip() for a in target.split(",")]
        if not all(_EMAIL.fullmatch(a) for a in addresses):
            return f"an email target is an address like ops@example.com, got {target!r}"
    elif channel is Channel.FILE:
        parts_ = target.replace("\\", "/").split("/")
        if target.startswith(("/", "\\")) or ".." in parts_ or "\0" in target:
            return (
                f"a file target is a relative file name inside the executor's output folder "
                f"(no '/' at the start, no '..'), got {target!r}"
            )
    return None
