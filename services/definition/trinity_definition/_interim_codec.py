# mypy: ignore-errors
"""INTERIM: ProcessSpec ↔ protobuf until ``trinity_process_model.proto_codec`` lands.

Only used when that module cannot be imported (see :mod:`trinity_definition.translate`);
delete this file once the library's codec is committed.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from google.protobuf import duration_pb2, json_format

from trinity.process.common.v1 import enums_pb2, types_pb2
from trinity.process.definition.v1 import definition_pb2 as d
from trinity_process_model import model as m
from trinity_process_model.authoring import AuthoringError
from trinity_process_model.validation import Violation


def CodecError(problems: list[tuple[str, str]]) -> AuthoringError:
    return AuthoringError([Violation(f, t) for f, t in problems])


def _dur(value: timedelta | None) -> duration_pb2.Duration | None:
    if value is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(value)
    return out


def _td(message: Any, field: str) -> timedelta | None:
    return getattr(message, field).ToTimedelta() if message.HasField(field) else None


def _money(value: m.Money) -> types_pb2.Money:
    nanos_total = int(value.amount * Decimal(1_000_000_000))
    units, nanos = divmod(abs(nanos_total), 1_000_000_000)
    sign = -1 if nanos_total < 0 else 1
    return types_pb2.Money(currency_code=value.currency, units=sign * units, nanos=sign * nanos)


def _money_of(message: types_pb2.Money) -> m.Money:
    amount = Decimal(message.units) + Decimal(message.nanos) / Decimal(1_000_000_000)
    return m.Money(amount.normalize() if amount else Decimal(0), message.currency_code)


def _enum(enum_type: Any, prefix: str, value: str) -> int:
    return int(enum_type.Value(f"{prefix}_{value.upper()}"))


def _enum_of(enum_cls: Any, enum_type: Any, prefix: str, number: int, path: str) -> Any:
    if number == 0:
        return None
    try:
        name = enum_type.Name(number)
    except ValueError:
        raise CodecError([(path, f"unknown value {number}")]) from None
    return enum_cls(name[len(prefix) + 1 :].lower())


def _retry(policy: m.RetryPolicy | None) -> d.RetryPolicy | None:
    if policy is None:
        return None
    return d.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff=_dur(policy.initial_backoff),
        backoff_multiplier=policy.backoff_multiplier,
        max_backoff=_dur(policy.max_backoff),
        non_retryable_codes=list(policy.non_retryable_codes),
    )


def _retry_of(message: Any, field: str) -> m.RetryPolicy | None:
    if not message.HasField(field):
        return None
    p = getattr(message, field)
    default = m.RetryPolicy()
    return m.RetryPolicy(
        max_attempts=p.max_attempts or default.max_attempts,
        initial_backoff=_td(p, "initial_backoff") or default.initial_backoff,
        backoff_multiplier=p.backoff_multiplier or default.backoff_multiplier,
        max_backoff=_td(p, "max_backoff") or default.max_backoff,
        non_retryable_codes=tuple(p.non_retryable_codes),
    )


def spec_to_proto(spec: m.ProcessSpec) -> d.ProcessSpec:
    out = d.ProcessSpec(name=spec.name, description=spec.description, labels=dict(spec.labels))
    for step in spec.steps:
        s = out.steps.add(
            id=step.id,
            name=step.name,
            depends_on=list(step.depends_on),
            condition=step.condition,
            informed=list(step.informed),
            on_failure=_enum(d.FailureAction, "FAILURE_ACTION", step.on_failure.value),
        )
        if step.retry is not None:
            s.retry.CopyFrom(_retry(step.retry))
        if step.timeout is not None:
            s.timeout.CopyFrom(_dur(step.timeout))
        c = step.config
        if isinstance(c, m.AgentTaskConfig):
            s.agent_task.SetInParent()
            s.agent_task.agent, s.agent_task.message = c.agent, c.message
            if c.max_cost is not None:
                s.agent_task.max_cost.CopyFrom(_money(c.max_cost))
        elif isinstance(c, m.HumanApprovalConfig):
            s.human_approval.SetInParent()
            h = s.human_approval
            h.approvers.extend(c.approvers)
            h.on_timeout = _enum(enums_pb2.TimeoutAction, "TIMEOUT_ACTION", c.on_timeout.value)
            h.artifacts.extend(c.artifacts)
            h.title, h.max_reminders = c.title, c.max_reminders
            if c.reminder_interval is not None:
                h.reminder_interval.CopyFrom(_dur(c.reminder_interval))
        elif isinstance(c, m.GatewayConfig):
            s.gateway.SetInParent()
            s.gateway.type = _enum(d.GatewayType, "GATEWAY_TYPE", c.type.value)
            for r in c.routes:
                s.gateway.routes.add(
                    target=r.target,
                    condition=r.condition,
                    is_default=r.is_default,
                    max_iterations=r.max_iterations,
                )
        elif isinstance(c, m.TimerConfig):
            s.timer.SetInParent()
            if c.duration is not None:
                s.timer.duration.CopyFrom(_dur(c.duration))
            elif c.until:
                s.timer.until = c.until
            s.timer.timezone = "" if c.timezone == "UTC" else c.timezone
        elif isinstance(c, m.NotificationConfig):
            s.notification.SetInParent()
            n = s.notification
            n.channel = _enum(enums_pb2.Channel, "CHANNEL", c.channel.value)
            n.target, n.message, n.subject = c.target, c.message, c.subject
        else:
            s.tool_run.SetInParent()
            s.tool_run.action = _enum(enums_pb2.ActionKind, "ACTION_KIND", c.action.value)
            s.tool_run.arguments.update(c.arguments)
    for trigger in spec.triggers:
        t = out.triggers.add()
        if isinstance(trigger, m.ManualTrigger):
            t.manual.SetInParent()
        elif isinstance(trigger, m.ScheduleTrigger):
            t.schedule.cron = trigger.cron
            t.schedule.timezone = "" if trigger.timezone == "UTC" else trigger.timezone
            if trigger.input:
                t.schedule.input.update(trigger.input)
            t.schedule.SetInParent()
        else:
            t.event.subject = trigger.subject
    for o in spec.outputs:
        out.outputs.add(
            channel=_enum(enums_pb2.Channel, "CHANNEL", o.channel.value),
            target=o.target,
            message=o.message,
            subject=o.subject,
        )
    if spec.budget is not None:
        out.budget.limit.CopyFrom(_money(spec.budget.limit))
        out.budget.on_exceeded = _enum(
            d.BudgetAction, "BUDGET_ACTION", spec.budget.on_exceeded.value
        )
    if spec.default_retry is not None:
        out.default_retry.CopyFrom(_retry(spec.default_retry))
    return out


def spec_from_proto(message: d.ProcessSpec) -> m.ProcessSpec:
    problems: list[tuple[str, str]] = []
    steps: list[m.Step] = []
    for i, s in enumerate(message.steps):
        path = f"steps[{i}]"
        kind = s.WhichOneof("kind")
        config: m.StepConfig
        if kind == "agent_task":
            a = s.agent_task
            config = m.AgentTaskConfig(
                a.agent, a.message, _money_of(a.max_cost) if a.HasField("max_cost") else None
            )
        elif kind == "human_approval":
            h = s.human_approval
            config = m.HumanApprovalConfig(
                approvers=tuple(h.approvers),
                on_timeout=_enum_of(
                    m.TimeoutAction, enums_pb2.TimeoutAction, "TIMEOUT_ACTION", h.on_timeout, path
                )
                or m.TimeoutAction.REJECT,
                artifacts=tuple(h.artifacts),
                title=h.title,
                reminder_interval=_td(h, "reminder_interval"),
                max_reminders=h.max_reminders,
            )
        elif kind == "gateway":
            g = s.gateway
            config = m.GatewayConfig(
                type=_enum_of(m.GatewayType, d.GatewayType, "GATEWAY_TYPE", g.type, path)
                or m.GatewayType.EXCLUSIVE,
                routes=tuple(
                    m.Route(r.target, r.condition, r.is_default, r.max_iterations) for r in g.routes
                ),
            )
        elif kind == "timer":
            config = m.TimerConfig(
                duration=_td(s.timer, "duration"),
                until=s.timer.until,
                timezone=s.timer.timezone or "UTC",
            )
        elif kind == "notification":
            n = s.notification
            config = m.NotificationConfig(
                _enum_of(m.Channel, enums_pb2.Channel, "CHANNEL", n.channel, path)
                or m.Channel.WEBHOOK,
                n.target,
                n.message,
                n.subject,
            )
        elif kind == "tool_run":
            t = s.tool_run
            config = m.ToolRunConfig(
                _enum_of(m.ActionKind, enums_pb2.ActionKind, "ACTION_KIND", t.action, path)
                or m.ActionKind.GENERATE,
                dict(t.arguments),
            )
        else:
            problems.append((path, "a step needs a kind (agent_task, human_approval, ...)"))
            continue
        steps.append(
            m.Step(
                id=s.id,
                config=config,
                name=s.name,
                depends_on=tuple(s.depends_on),
                condition=s.condition,
                retry=_retry_of(s, "retry"),
                timeout=_td(s, "timeout"),
                on_failure=_enum_of(
                    m.FailureAction, d.FailureAction, "FAILURE_ACTION", s.on_failure, path
                )
                or m.FailureAction.FAIL,
                informed=tuple(s.informed),
            )
        )
    triggers: list[m.Trigger] = []
    for i, t in enumerate(message.triggers):
        which = t.WhichOneof("kind")
        if which == "manual":
            triggers.append(m.ManualTrigger())
        elif which == "schedule":
            data = (
                json_format.MessageToDict(t.schedule.input) if t.schedule.HasField("input") else {}
            )
            triggers.append(m.ScheduleTrigger(t.schedule.cron, t.schedule.timezone or "UTC", data))
        elif which == "event":
            triggers.append(m.EventTrigger(t.event.subject))
        else:
            problems.append((f"triggers[{i}]", "a trigger needs a kind"))
    outputs = [
        m.Output(
            _enum_of(m.Channel, enums_pb2.Channel, "CHANNEL", o.channel, f"outputs[{i}]")
            or m.Channel.WEBHOOK,
            o.target,
            o.message,
            o.subject,
        )
        for i, o in enumerate(message.outputs)
    ]
    if problems:
        raise CodecError(problems)
    budget = None
    if message.HasField("budget"):
        budget = m.Budget(
            _money_of(message.budget.limit),
            _enum_of(
                m.BudgetAction,
                d.BudgetAction,
                "BUDGET_ACTION",
                message.budget.on_exceeded,
                "budget",
            )
            or m.BudgetAction.FAIL,
        )
    return m.ProcessSpec(
        name=message.name,
        steps=tuple(steps),
        description=message.description,
        triggers=tuple(triggers),
        outputs=tuple(outputs),
        budget=budget,
        default_retry=_retry_of(message, "default_retry"),
        labels=dict(message.labels),
    )
