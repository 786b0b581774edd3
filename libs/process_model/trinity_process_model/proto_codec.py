"""`ProcessSpec` to and from its contract, ``trinity.process.definition.v1.ProcessSpec``.

Lossless: ``spec_from_proto(spec_to_proto(spec)) == spec`` for every spec that
`validate` accepts, and ``spec_to_proto(spec_from_proto(msg))`` equals `msg` up to
the contract's documented defaults (an UNSPECIFIED enum reads as the model default
and is written back explicitly; an unset retry field reads as the model default).

Money travels as units + nanos (exact, `Decimal`, never a float); durations as
``google.protobuf.Duration`` (microsecond precision, the model's); schedule input as
``google.protobuf.Struct`` (numbers are doubles there: integral numbers read back as
``int``). Both directions raise :class:`AuthoringError` with field paths for what the
other side cannot hold: a step with no kind, an UNSPECIFIED channel or action,
malformed money, sub-microsecond durations; and, writing, values outside the
contract's ranges (negative counts, more than 9 decimal places, a timer with both a
duration and a time), all of which `validate` reports too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from google.protobuf import duration_pb2, struct_pb2

from trinity.process.common.v1 import enums_pb2, types_pb2
from trinity.process.definition.v1 import definition_pb2 as pb
from trinity_platform.enum_maps import enum_map
from trinity_platform.json_values import from_value, struct_to_dict
from trinity_process_model.authoring import AuthoringError
from trinity_process_model.durations import MAX_DURATION
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
from trinity_process_model.money import amount_from_units_nanos, units_nanos
from trinity_process_model.validation import MAX_JSON_INTEGER, MAX_UINT32, Violation, field_path

__all__ = [
    "money_from_proto",
    "money_to_proto",
    "spec_from_proto",
    "spec_to_proto",
    "value_from_proto",
]

_E = TypeVar("_E", bound=StrEnum)

# The enums of the definition language and their contract values (services translate with these).

CHANNELS = enum_map(Channel, enums_pb2.Channel, "CHANNEL_")
ACTION_KINDS = enum_map(ActionKind, enums_pb2.ActionKind, "ACTION_KIND_")
TIMEOUT_ACTIONS = enum_map(TimeoutAction, enums_pb2.TimeoutAction, "TIMEOUT_ACTION_")
REJECT_ACTIONS = enum_map(RejectAction, pb.RejectAction, "REJECT_ACTION_")
GATEWAY_TYPES = enum_map(GatewayType, pb.GatewayType, "GATEWAY_TYPE_")
_FAILURE_ACTIONS = enum_map(FailureAction, pb.FailureAction, "FAILURE_ACTION_")
INPUT_TYPES = enum_map(InputType, pb.InputType, "INPUT_TYPE_")
MESSAGE_TIMEOUT_ACTIONS = enum_map(
    MessageTimeoutAction, pb.MessageTimeoutAction, "MESSAGE_TIMEOUT_ACTION_"
)
BUDGET_ACTIONS = enum_map(BudgetAction, pb.BudgetAction, "BUDGET_ACTION_")
_DEFAULT_RETRY = RetryPolicy()
_MAX_SECONDS = int(MAX_DURATION.total_seconds())


# ------------------------------------------------------------------ public API


def spec_to_proto(spec: ProcessSpec) -> pb.ProcessSpec:
    """The contract message of `spec`; AuthoringError if it holds what the contract cannot."""
    encoder = _Encoder()
    message = encoder.spec(spec)
    if encoder.violations:
        raise AuthoringError(encoder.violations)
    return message


def spec_from_proto(message: pb.ProcessSpec) -> ProcessSpec:
    """The spec of a contract message; AuthoringError (with paths) if it is malformed."""
    decoder = _Decoder()
    spec = decoder.spec(message)
    if decoder.violations:
        raise AuthoringError(decoder.violations)
    return spec


def money_to_proto(money: Money) -> types_pb2.Money:
    """Money → common Money (exact); ValueError if it does not fit units + nanos."""
    units, nanos = units_nanos(money.amount)
    return types_pb2.Money(currency_code=money.currency, units=units, nanos=nanos)


def money_from_proto(message: types_pb2.Money) -> Money:
    """Common Money → Money (exact); ValueError on malformed units and nanos."""
    return Money(amount_from_units_nanos(message.units, message.nanos), message.currency_code)


# ---------------------------------------------------------------------- encode


class _Encoder:
    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def error(self, path: str, description: str) -> None:
        self.violations.append(Violation(path, description))

    def spec(self, spec: ProcessSpec) -> pb.ProcessSpec:
        message = pb.ProcessSpec(name=spec.name, description=spec.description)
        for index, step in enumerate(spec.steps):
            message.steps.append(self.step(field_path("steps", index), step))
        for index, trigger in enumerate(spec.triggers):
            message.triggers.append(self.trigger(field_path("triggers", index), trigger))
        for index, output in enumerate(spec.outputs):
            message.outputs.append(
                pb.Output(
                    channel=self.enum(f"outputs[{index}].channel", output.channel, CHANNELS),
                    target=output.target,
                    message=output.message,
                    subject=output.subject,
                )
            )
        if spec.budget is not None:
            self.money(message.budget.limit, "budget.limit", spec.budget.limit)
            message.budget.on_exceeded = self.enum(
                "budget.on_exceeded", spec.budget.on_exceeded, BUDGET_ACTIONS
            )
        if spec.default_retry is not None:
            self.retry(message.default_retry, "default_retry", spec.default_retry)
        self.text_map(message.labels, "labels", spec.labels)
        for declaration in spec.inputs:
            path = field_path("inputs", declaration.name)
            entry = message.inputs.add(
                name=declaration.name,
                type=self.enum(f"{path}.type", declaration.type, INPUT_TYPES),
                required=declaration.required,
                description=declaration.description,
            )
            if declaration.has_default:
                self.value(entry.default_value, f"{path}.default", declaration.default)
        return message

    def step(self, path: str, step: Step) -> pb.Step:
        message = pb.Step(
            id=step.id,
            name=step.name,
            depends_on=step.depends_on,
            condition=step.condition,
            on_failure=self.enum(f"{path}.on_failure", step.on_failure, _FAILURE_ACTIONS),
            informed=step.informed,
        )
        if step.retry is not None:
            self.retry(message.retry, f"{path}.retry", step.retry)
        if step.timeout is not None:
            self.duration(message.timeout, f"{path}.timeout", step.timeout)
        self.config(message, path, step.config)
        if step.compensate is not None:
            base = f"{path}.compensate"
            compensation = message.compensate
            compensation.SetInParent()
            if step.compensate.retry is not None:
                self.retry(compensation.retry, f"{base}.retry", step.compensate.retry)
            if step.compensate.timeout is not None:
                self.duration(compensation.timeout, f"{base}.timeout", step.compensate.timeout)
            # Compensation's oneof has the same field names as Step's for these kinds.
            self.config(compensation, base, step.compensate.config)  # type: ignore[arg-type]
        return message

    def config(self, message: pb.Step, path: str, config: StepConfig) -> None:
        if isinstance(config, AgentTaskConfig):
            agent = message.agent_task
            agent.SetInParent()
            agent.agent = config.agent
            agent.message = config.message
            if config.max_cost is not None:
                self.money(agent.max_cost, f"{path}.agent_task.max_cost", config.max_cost)
            self.for_each(agent, f"{path}.agent_task", config)
        elif isinstance(config, HumanApprovalConfig):
            base = f"{path}.human_approval"
            approval = message.human_approval
            approval.SetInParent()
            approval.approvers.extend(config.approvers)
            approval.on_timeout = self.enum(
                f"{base}.on_timeout", config.on_timeout, TIMEOUT_ACTIONS
            )
            approval.artifacts.extend(config.artifacts)
            approval.title = config.title
            if config.reminder_interval is not None:
                self.duration(
                    approval.reminder_interval,
                    f"{base}.reminder_interval",
                    config.reminder_interval,
                )
            approval.max_reminders = self.uint32(f"{base}.max_reminders", config.max_reminders)
            if config.on_reject is not RejectAction.FAIL:  # the default stays unset
                approval.on_reject = self.enum(
                    f"{base}.on_reject", config.on_reject, REJECT_ACTIONS
                )
        elif isinstance(config, GatewayConfig):
            base = f"{path}.gateway"
            gateway = message.gateway
            gateway.SetInParent()
            gateway.type = self.enum(f"{base}.type", config.type, GATEWAY_TYPES)
            for index, route in enumerate(config.routes):
                gateway.routes.append(
                    pb.Route(
                        target=route.target,
                        condition=route.condition,
                        is_default=route.is_default,
                        max_iterations=self.uint32(
                            f"{base}.routes[{index}].max_iterations", route.max_iterations
                        ),
                    )
                )
        elif isinstance(config, TimerConfig):
            timer = message.timer
            timer.SetInParent()
            if config.duration is not None and config.until:
                self.error(f"{path}.timer", "a timer has a duration or an until time, not both")
            elif config.duration is not None:
                self.duration(timer.duration, f"{path}.timer.duration", config.duration)
            elif config.until:
                timer.until = config.until
            timer.timezone = config.timezone
        elif isinstance(config, NotificationConfig):
            note = message.notification
            note.SetInParent()
            note.channel = self.enum(f"{path}.notification.channel", config.channel, CHANNELS)
            note.target = config.target
            note.message = config.message
            note.subject = config.subject
        elif isinstance(config, ToolRunConfig):
            tool = message.tool_run
            tool.SetInParent()
            tool.action = self.enum(f"{path}.tool_run.action", config.action, ACTION_KINDS)
            self.text_map(tool.arguments, f"{path}.tool_run.arguments", config.arguments)
            self.for_each(tool, f"{path}.tool_run", config)
        elif isinstance(config, WaitForMessageConfig):
            wait = message.wait_for_message
            wait.SetInParent()
            wait.message = config.message
            wait.correlation_key = config.correlation_key
            wait.subject = config.subject
            wait.key_field = config.key_field
            wait.on_timeout = self.enum(
                f"{path}.wait_for_message.on_timeout", config.on_timeout, MESSAGE_TIMEOUT_ACTIONS
            )
        elif isinstance(config, SubProcessConfig):
            sub = message.sub_process
            sub.SetInParent()
            sub.process = config.process
            sub.version = config.version
            self.text_map(sub.input, f"{path}.sub_process.input", config.input)
            self.for_each(sub, f"{path}.sub_process", config)
        else:
            self.error(path, f"unknown step kind {type(config).__name__}")

    def for_each(
        self,
        message: pb.AgentTask | pb.ToolRun | pb.SubProcess,
        path: str,
        config: AgentTaskConfig | ToolRunConfig | SubProcessConfig,
    ) -> None:
        message.for_each = config.for_each
        for name in _FOR_EACH_COUNTS:
            setattr(message, name, self.uint32(f"{path}.{name}", getattr(config, name)))

    def trigger(self, path: str, trigger: Trigger) -> pb.Trigger:
        message = pb.Trigger()
        if isinstance(trigger, ManualTrigger):
            message.manual.SetInParent()
        elif isinstance(trigger, ScheduleTrigger):
            schedule = message.schedule
            schedule.SetInParent()
            schedule.cron = trigger.cron
            schedule.timezone = trigger.timezone
            for key, value in trigger.input.items():
                self.value(
                    schedule.input.fields[key], field_path(f"{path}.schedule.input", key), value
                )
        elif isinstance(trigger, EventTrigger):
            message.event.subject = trigger.subject
        else:
            self.error(path, f"unknown trigger {type(trigger).__name__}")
        return message

    def value(self, target: struct_pb2.Value, path: str, value: Any) -> None:
        if value is None:
            target.null_value = struct_pb2.NULL_VALUE
        elif isinstance(value, bool):
            target.bool_value = value
        elif isinstance(value, int):
            if abs(value) > MAX_JSON_INTEGER:
                self.error(path, f"integer {value} is beyond ±2^53 and would lose precision")
            target.number_value = float(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.error(path, f"number {value} is not finite")
            target.number_value = value
        elif isinstance(value, str):
            target.string_value = value
        elif isinstance(value, list | tuple):
            target.list_value.SetInParent()
            for index, item in enumerate(value):
                self.value(target.list_value.values.add(), f"{path}[{index}]", item)
        elif isinstance(value, Mapping):
            target.struct_value.SetInParent()
            for key, item in value.items():
                if not isinstance(key, str):
                    self.error(path, f"keys must be text, got {type(key).__name__}")
                    continue
                self.value(target.struct_value.fields[key], field_path(path, key), item)
        else:
            self.error(path, f"{type(value).__name__} is not a JSON value")

    def retry(self, target: pb.RetryPolicy, path: str, retry: RetryPolicy) -> None:
        target.SetInParent()
        if retry.max_attempts < 1:
            self.error(f"{path}.max_attempts", "max_attempts is at least 1 (0 means the default)")
        target.max_attempts = self.uint32(f"{path}.max_attempts", retry.max_attempts)
        self.duration(target.initial_backoff, f"{path}.initial_backoff", retry.initial_backoff)
        if not retry.backoff_multiplier:
            self.error(f"{path}.backoff_multiplier", "0 means the default (2) in the contract")
        target.backoff_multiplier = retry.backoff_multiplier
        self.duration(target.max_backoff, f"{path}.max_backoff", retry.max_backoff)
        target.non_retryable_codes.extend(retry.non_retryable_codes)

    def duration(self, target: duration_pb2.Duration, path: str, value: timedelta) -> None:
        target.SetInParent()
        micros = value // timedelta(microseconds=1)
        seconds, rest = divmod(abs(micros), 1_000_000)
        if seconds > _MAX_SECONDS:
            self.error(path, "durations are at most 10,000 years")
            seconds, rest = 0, 0
        sign = -1 if micros < 0 else 1
        target.seconds = sign * seconds
        target.nanos = sign * rest * 1000

    def text_map(self, target: Any, path: str, values: Mapping[str, str]) -> None:
        for key, value in values.items():
            try:
                target[key] = value
            except (TypeError, ValueError):
                self.error(field_path(path, str(key)), "keys and values must be text")

    def money(self, target: types_pb2.Money, path: str, money: Money) -> None:
        try:
            target.CopyFrom(money_to_proto(money))
        except ValueError as exc:
            self.error(f"{path}.amount", str(exc))
            target.currency_code = money.currency

    def uint32(self, path: str, value: int) -> int:
        if not 0 <= value <= MAX_UINT32:
            self.error(path, f"must be a whole number 0..{MAX_UINT32}, got {value}")
            return 0
        return value

    def enum(self, path: str, value: _E, table: Mapping[_E, Any]) -> Any:
        """The contract's number of `value` (typed Any: each generated enum is its own int)."""
        number = table.get(value)
        if number is None:
            self.error(path, f"unknown value {value!r}")
            return 0
        return number


# ---------------------------------------------------------------------- decode


class _Decoder:
    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def error(self, path: str, description: str) -> None:
        self.violations.append(Violation(path, description))

    def spec(self, message: pb.ProcessSpec) -> ProcessSpec:
        steps = [self.step(field_path("steps", i), s) for i, s in enumerate(message.steps)]
        triggers = [
            self.trigger(field_path("triggers", i), t) for i, t in enumerate(message.triggers)
        ]
        outputs = []
        for index, output in enumerate(message.outputs):
            channel = self.required_enum(f"outputs[{index}].channel", output.channel, CHANNELS)
            if channel is not None:
                outputs.append(Output(channel, output.target, output.message, output.subject))
        budget = None
        if message.HasField("budget"):
            budget = self.budget(message.budget)
        default_retry = None
        if message.HasField("default_retry"):
            default_retry = self.retry("default_retry", message.default_retry)
        return ProcessSpec(
            name=message.name,
            steps=tuple(s for s in steps if s is not None),
            description=message.description,
            triggers=tuple(t for t in triggers if t is not None),
            outputs=tuple(outputs),
            budget=budget,
            default_retry=default_retry,
            labels=dict(message.labels),
            inputs=tuple(self.input(d) for d in message.inputs),
        )

    def input(self, message: pb.InputDeclaration) -> InputDeclaration:
        path = field_path("inputs", message.name)
        kind = self.required_enum(f"{path}.type", message.type, INPUT_TYPES)
        has_default = message.HasField("default_value")
        return InputDeclaration(
            name=message.name,
            type=kind or InputType.STRING,
            required=message.required,
            has_default=has_default,
            default=from_value(message.default_value) if has_default else None,
            description=message.description,
        )

    def budget(self, message: pb.Budget) -> Budget | None:
        if not message.HasField("limit"):
            self.error("budget.limit", "a budget needs a limit")
            return None
        limit = self.money("budget.limit", message.limit)
        on_exceeded = self.enum(
            "budget.on_exceeded", message.on_exceeded, BUDGET_ACTIONS, BudgetAction.FAIL
        )
        return Budget(limit, on_exceeded) if limit is not None else None

    def step(self, path: str, message: pb.Step) -> Step | None:
        retry = self.retry(f"{path}.retry", message.retry) if message.HasField("retry") else None
        timeout = None
        if message.HasField("timeout"):
            timeout = self.duration(f"{path}.timeout", message.timeout)
        on_failure = self.enum(
            f"{path}.on_failure", message.on_failure, _FAILURE_ACTIONS, FailureAction.FAIL
        )
        config = self.config(path, message)
        compensate = None
        if message.HasField("compensate"):
            compensate = self.compensation(f"{path}.compensate", message.compensate)
            if compensate is None:
                return None
        if config is None:
            return None
        return Step(
            id=message.id,
            config=config,
            name=message.name,
            depends_on=tuple(message.depends_on),
            condition=message.condition,
            retry=retry,
            timeout=timeout,
            on_failure=on_failure,
            informed=tuple(message.informed),
            compensate=compensate,
        )

    def compensation(self, path: str, message: pb.Compensation) -> Compensation | None:
        if message.WhichOneof("kind") is None:
            self.error(
                path, "the compensation has no kind: set agent_task, tool_run or notification"
            )
            return None
        retry = self.retry(f"{path}.retry", message.retry) if message.HasField("retry") else None
        timeout = None
        if message.HasField("timeout"):
            timeout = self.duration(f"{path}.timeout", message.timeout)
        # Compensation's oneof has the same field names as Step's for these kinds.
        config = self.config(path, message)  # type: ignore[arg-type]
        if config is None:
            return None
        assert isinstance(config, AgentTaskConfig | ToolRunConfig | NotificationConfig)
        return Compensation(config, retry, timeout)

    def config(self, path: str, message: pb.Step) -> StepConfig | None:
        kind = message.WhichOneof("kind")
        if kind == "agent_task":
            agent = message.agent_task
            max_cost = None
            if agent.HasField("max_cost"):
                max_cost = self.money(f"{path}.agent_task.max_cost", agent.max_cost)
                if max_cost is None:
                    return None
            return AgentTaskConfig(agent.agent, agent.message, max_cost, **_for_each_of(agent))
        if kind == "human_approval":
            approval = message.human_approval
            base = f"{path}.human_approval"
            reminder = None
            if approval.HasField("reminder_interval"):
                reminder = self.duration(f"{base}.reminder_interval", approval.reminder_interval)
            return HumanApprovalConfig(
                approvers=tuple(approval.approvers),
                on_timeout=self.enum(
                    f"{base}.on_timeout",
                    approval.on_timeout,
                    TIMEOUT_ACTIONS,
                    TimeoutAction.REJECT,
                ),
                artifacts=tuple(approval.artifacts),
                title=approval.title,
                reminder_interval=reminder,
                max_reminders=approval.max_reminders,
                on_reject=self.enum(
                    f"{base}.on_reject", approval.on_reject, REJECT_ACTIONS, RejectAction.FAIL
                ),
            )
        if kind == "gateway":
            gateway = message.gateway
            return GatewayConfig(
                type=self.enum(
                    f"{path}.gateway.type", gateway.type, GATEWAY_TYPES, GatewayType.EXCLUSIVE
                ),
                routes=tuple(
                    Route(r.target, r.condition, r.is_default, r.max_iterations)
                    for r in gateway.routes
                ),
            )
        if kind == "timer":
            timer = message.timer
            duration = None
            if timer.WhichOneof("wait") == "duration":
                duration = self.duration(f"{path}.timer.duration", timer.duration)
            return TimerConfig(duration, timer.until, timer.timezone or "UTC")
        if kind == "notification":
            note = message.notification
            channel = self.required_enum(f"{path}.notification.channel", note.channel, CHANNELS)
            if channel is None:
                return None
            return NotificationConfig(channel, note.target, note.message, note.subject)
        if kind == "tool_run":
            tool = message.tool_run
            action = self.required_enum(f"{path}.tool_run.action", tool.action, ACTION_KINDS)
            if action is None:
                return None
            return ToolRunConfig(action, dict(tool.arguments), **_for_each_of(tool))
        if kind == "wait_for_message":
            wait = message.wait_for_message
            return WaitForMessageConfig(
                message=wait.message,
                correlation_key=wait.correlation_key,
                subject=wait.subject,
                key_field=wait.key_field or DEFAULT_KEY_FIELD,
                on_timeout=self.enum(
                    f"{path}.wait_for_message.on_timeout",
                    wait.on_timeout,
                    MESSAGE_TIMEOUT_ACTIONS,
                    MessageTimeoutAction.FAIL,
                ),
            )
        if kind == "sub_process":
            sub = message.sub_process
            return SubProcessConfig(sub.process, sub.version, dict(sub.input), **_for_each_of(sub))
        self.error(
            path,
            "the step has no kind: set one of agent_task, human_approval, gateway, timer, "
            "notification, tool_run, wait_for_message, sub_process",
        )
        return None

    def trigger(self, path: str, message: pb.Trigger) -> Trigger | None:
        kind = message.WhichOneof("kind")
        if kind == "manual":
            return ManualTrigger()
        if kind == "schedule":
            schedule = message.schedule
            return ScheduleTrigger(
                cron=schedule.cron,
                timezone=schedule.timezone or "UTC",
                input=struct_to_dict(schedule.input),
            )
        if kind == "event":
            return EventTrigger(message.event.subject)
        self.error(path, "the trigger has no kind: set one of manual, schedule, event")
        return None

    def retry(self, path: str, message: pb.RetryPolicy) -> RetryPolicy:
        initial: timedelta | None = None
        if message.HasField("initial_backoff"):
            initial = self.duration(f"{path}.initial_backoff", message.initial_backoff)
        longest: timedelta | None = None
        if message.HasField("max_backoff"):
            longest = self.duration(f"{path}.max_backoff", message.max_backoff)
        return RetryPolicy(
            max_attempts=message.max_attempts or _DEFAULT_RETRY.max_attempts,
            initial_backoff=_DEFAULT_RETRY.initial_backoff if initial is None else initial,
            backoff_multiplier=message.backoff_multiplier or _DEFAULT_RETRY.backoff_multiplier,
            max_backoff=_DEFAULT_RETRY.max_backoff if longest is None else longest,
            non_retryable_codes=tuple(message.non_retryable_codes),
        )

    def duration(self, path: str, message: duration_pb2.Duration) -> timedelta | None:
        seconds, nanos = message.seconds, message.nanos
        if (seconds > 0 and nanos < 0) or (seconds < 0 and nanos > 0):
            self.error(path, "seconds and nanos have different signs")
            return None
        if abs(seconds) > _MAX_SECONDS or abs(nanos) > 999_999_999:
            self.error(path, "the duration is out of range")
            return None
        if nanos % 1000:
            self.error(path, "durations are precise to the microsecond, not the nanosecond")
            return None
        return timedelta(seconds=seconds, microseconds=nanos // 1000)

    def money(self, path: str, message: types_pb2.Money) -> Money | None:
        try:
            return money_from_proto(message)
        except ValueError as exc:
            self.error(f"{path}.nanos", str(exc))
            return None

    def enum(self, path: str, number: int, table: Mapping[_E, int], default: _E) -> _E:
        if number == 0:
            return default
        for value, candidate in table.items():
            if candidate == number:
                return value
        self.error(path, f"unknown enum number {number}")
        return default

    def required_enum(self, path: str, number: int, table: Mapping[_E, int]) -> _E | None:
        for value, candidate in table.items():
            if candidate == number:
                return value
        allowed = ", ".join(str(v) for v in table)
        what = "unset" if number == 0 else f"unknown number {number}"
        self.error(path, f"is required ({what}): one of {allowed}")
        return None


def value_from_proto(value: struct_pb2.Value) -> Any:
    """A JSON value of the contract as plain Python (integral numbers as ``int``)."""
    return from_value(value)


_FOR_EACH_COUNTS = ("max_concurrency", "max_items", "tolerated_failures")


def _for_each_of(message: pb.AgentTask | pb.ToolRun | pb.SubProcess) -> dict[str, Any]:
    """The for_each fields of a step kind that can run once per item."""
    return {
        "for_each": message.for_each,
        **{name: getattr(message, name) for name in _FOR_EACH_COUNTS},
    }
