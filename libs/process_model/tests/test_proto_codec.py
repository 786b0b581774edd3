"""ProcessSpec ⇄ trinity.process.definition.v1.ProcessSpec."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from trinity.process.common.v1 import enums_pb2, types_pb2
from trinity.process.definition.v1 import definition_pb2 as pb
from trinity_process_model.authoring import AuthoringError, dump_process, parse_process
from trinity_process_model.model import (
    ActionKind,
    AgentTaskConfig,
    Budget,
    BudgetAction,
    Channel,
    FailureAction,
    GatewayConfig,
    GatewayType,
    HumanApprovalConfig,
    Money,
    NotificationConfig,
    ProcessSpec,
    RetryPolicy,
    ScheduleTrigger,
    Step,
    TimeoutAction,
    TimerConfig,
    ToolRunConfig,
)
from trinity_process_model.money import format_money
from trinity_process_model.proto_codec import (
    money_from_proto,
    money_to_proto,
    spec_from_proto,
    spec_to_proto,
)

FIXTURES = sorted((Path(__file__).parent / "fixtures").iterdir())


def problems_decoding(message: pb.ProcessSpec) -> dict[str, str]:
    with pytest.raises(AuthoringError) as caught:
        spec_from_proto(message)
    return {v.field: v.description for v in caught.value.violations}


def problems_encoding(spec: ProcessSpec) -> dict[str, str]:
    with pytest.raises(AuthoringError) as caught:
        spec_to_proto(spec)
    return {v.field: v.description for v in caught.value.violations}


def one(config: object, **step: object) -> ProcessSpec:
    return ProcessSpec("p", (Step("a", config, **step),))  # type: ignore[arg-type]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_fixtures_round_trip_through_the_contract(path: Path) -> None:
    spec = parse_process(path.read_text())
    message = spec_to_proto(spec)
    wire = pb.ProcessSpec.FromString(message.SerializeToString())
    assert spec_from_proto(wire) == spec
    assert spec_to_proto(spec_from_proto(wire)) == message
    assert dump_process(spec_from_proto(wire)) == dump_process(spec)


def test_the_message_carries_every_field() -> None:
    spec = parse_process((Path(__file__).parent / "fixtures" / "research_report.yaml").read_text())
    message = spec_to_proto(spec)
    assert message.name == "research-report"
    assert message.budget.limit == types_pb2.Money(currency_code="USD", units=5, nanos=0)
    assert message.budget.on_exceeded == pb.BUDGET_ACTION_PAUSE
    assert message.default_retry.max_attempts == 3
    assert message.default_retry.initial_backoff == duration_pb2.Duration(seconds=10)
    research = message.steps[0]
    assert research.WhichOneof("kind") == "agent_task"
    assert research.agent_task.max_cost == types_pb2.Money(currency_code="USD", units=2)
    assert research.timeout.seconds == 1800
    review = message.steps[1]
    assert review.human_approval.on_timeout == enums_pb2.TIMEOUT_ACTION_NOTIFY
    assert review.human_approval.reminder_interval.seconds == 4 * 3600
    decide = message.steps[2].gateway
    assert decide.type == pb.GATEWAY_TYPE_EXCLUSIVE
    assert [r.target for r in decide.routes] == ["publish", "revise", "rejected"]
    assert decide.routes[2].is_default
    assert message.steps[4].gateway.routes[0].max_iterations == 3
    timer = message.steps[6].timer
    assert timer.WhichOneof("wait") == "until" and timer.timezone == "Europe/Berlin"
    assert message.steps[7].notification.channel == enums_pb2.CHANNEL_FILE
    assert message.steps[8].on_failure == pb.FAILURE_ACTION_CONTINUE
    schedule = message.triggers[1].schedule
    assert schedule.input["topic"] == "Weekly market overview"
    assert message.triggers[0].WhichOneof("kind") == "manual"
    assert message.labels == {"team": "research", "seed": "it3"}
    assert message.outputs[0].channel == enums_pb2.CHANNEL_WEBHOOK


# --------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("amount", "units", "nanos"),
    [
        ("0", 0, 0),
        ("12.50", 12, 500_000_000),
        ("0.000000001", 0, 1),
        ("-1.75", -1, -750_000_000),
        ("-0.5", 0, -500_000_000),
        ("9223372036854775807.999999999", 2**63 - 1, 999_999_999),
        ("1E+3", 1000, 0),
        ("1.10000000000", 1, 100_000_000),
    ],
)
def test_money_is_exact(amount: str, units: int, nanos: int) -> None:
    money = Money(Decimal(amount), "EUR")
    message = money_to_proto(money)
    assert (message.units, message.nanos, message.currency_code) == (units, nanos, "EUR")
    assert money_from_proto(message) == money


@pytest.mark.parametrize("amount", ["0.0000000001", "9223372036854775808", "NaN", "Infinity"])
def test_money_outside_the_contract_is_refused(amount: str) -> None:
    with pytest.raises(ValueError):
        money_to_proto(Money(Decimal(amount), "USD"))


@pytest.mark.parametrize(("units", "nanos"), [(1, -5), (-1, 5), (0, 1_000_000_000)])
def test_malformed_money_is_refused(units: int, nanos: int) -> None:
    with pytest.raises(ValueError):
        money_from_proto(types_pb2.Money(currency_code="USD", units=units, nanos=nanos))


def test_money_reads_back_in_the_currency_s_decimals() -> None:
    usd = money_from_proto(types_pb2.Money(currency_code="USD", units=12, nanos=500_000_000))
    assert usd.amount == Decimal("12.5")
    assert format_money(usd) == "12.50 USD"
    jpy = money_from_proto(types_pb2.Money(currency_code="JPY", units=300))
    assert format_money(jpy) == "300 JPY"


# --------------------------------------------------------------------- enums


def test_unspecified_enums_read_as_the_model_defaults() -> None:
    message = pb.ProcessSpec(
        name="p",
        steps=[
            pb.Step(id="a", human_approval=pb.HumanApproval(approvers=["x@example.com"])),
            pb.Step(id="g", gateway=pb.Gateway(routes=[pb.Route(target="a")])),
        ],
        budget=pb.Budget(limit=types_pb2.Money(currency_code="USD", units=1)),
        default_retry=pb.RetryPolicy(),
    )
    spec = spec_from_proto(message)
    approval = spec.steps[0].config
    assert isinstance(approval, HumanApprovalConfig) and approval.on_timeout is TimeoutAction.REJECT
    gateway = spec.steps[1].config
    assert isinstance(gateway, GatewayConfig) and gateway.type is GatewayType.EXCLUSIVE
    assert spec.steps[0].on_failure is FailureAction.FAIL
    assert spec.budget == Budget(Money(Decimal(1), "USD"), BudgetAction.FAIL)
    assert spec.default_retry == RetryPolicy()


@pytest.mark.parametrize(
    ("value", "number"),
    [(c, getattr(enums_pb2, f"CHANNEL_{c.name}")) for c in Channel]
    + [(a, getattr(enums_pb2, f"ACTION_KIND_{a.name}")) for a in ActionKind]
    + [(t, getattr(enums_pb2, f"TIMEOUT_ACTION_{t.name}")) for t in TimeoutAction]
    + [(g, getattr(pb, f"GATEWAY_TYPE_{g.name}")) for g in GatewayType]
    + [(f, getattr(pb, f"FAILURE_ACTION_{f.name}")) for f in FailureAction]
    + [(b, getattr(pb, f"BUDGET_ACTION_{b.name}")) for b in BudgetAction],
    ids=str,
)
def test_every_enum_value_maps_by_name(value: object, number: int) -> None:
    spec = ProcessSpec(
        "p",
        (
            Step(
                "n",
                NotificationConfig(value if isinstance(value, Channel) else Channel.FILE, "x", "y"),
            ),
            Step("t", ToolRunConfig(value if isinstance(value, ActionKind) else ActionKind.VERIFY)),
            Step(
                "h",
                HumanApprovalConfig(
                    ("x",),
                    on_timeout=value if isinstance(value, TimeoutAction) else TimeoutAction.NOTIFY,
                ),
                on_failure=value if isinstance(value, FailureAction) else FailureAction.FAIL,
            ),
            Step(
                "g",
                GatewayConfig(
                    value if isinstance(value, GatewayType) else GatewayType.PARALLEL, ()
                ),
            ),
        ),
        budget=Budget(
            Money(Decimal(1)), value if isinstance(value, BudgetAction) else BudgetAction.FAIL
        ),
    )
    message = spec_to_proto(spec)
    numbers = {
        Channel: message.steps[0].notification.channel,
        ActionKind: message.steps[1].tool_run.action,
        TimeoutAction: message.steps[2].human_approval.on_timeout,
        FailureAction: message.steps[2].on_failure,
        GatewayType: message.steps[3].gateway.type,
        BudgetAction: message.budget.on_exceeded,
    }
    assert numbers[type(value)] == number  # type: ignore[index]
    assert spec_from_proto(message) == spec


# ------------------------------------------------------------- other values


def test_empty_kinds_keep_their_kind() -> None:
    """A step whose config is all defaults still says which kind it is."""
    spec = ProcessSpec("p", (Step("w", TimerConfig()), Step("a", AgentTaskConfig("", ""))))
    message = spec_to_proto(spec)
    assert [s.WhichOneof("kind") for s in message.steps] == ["timer", "agent_task"]
    assert spec_from_proto(message) == spec


def test_zero_durations_are_kept_apart_from_absent_ones() -> None:
    spec = one(
        TimerConfig(duration=timedelta(0)),
        timeout=timedelta(0),
        retry=RetryPolicy(initial_backoff=timedelta(0), max_backoff=timedelta(0)),
    )
    message = spec_to_proto(spec)
    assert message.steps[0].HasField("timeout")
    assert message.steps[0].timer.WhichOneof("wait") == "duration"
    assert spec_from_proto(message) == spec


def test_durations_are_exact_to_the_microsecond() -> None:
    spec = one(
        TimerConfig(duration=timedelta(days=3, microseconds=7)), timeout=-timedelta(microseconds=1)
    )
    message = spec_to_proto(spec)
    assert message.steps[0].timeout == duration_pb2.Duration(seconds=0, nanos=-1000)
    assert message.steps[0].timer.duration == duration_pb2.Duration(seconds=3 * 86400, nanos=7000)
    assert spec_from_proto(message) == spec


def test_schedule_input_numbers_come_back_as_written() -> None:
    spec = ProcessSpec(
        "p",
        (),
        triggers=(
            ScheduleTrigger(
                "* * * * *", input={"n": 3, "f": 2.5, "big": 2**53, "l": [None, True, {"x": "y"}]}
            ),
        ),
    )
    back = spec_from_proto(spec_to_proto(spec))
    assert back == spec
    trigger = back.triggers[0]
    assert isinstance(trigger, ScheduleTrigger)
    assert type(trigger.input["n"]) is int and type(trigger.input["f"]) is float


def test_timezone_unset_reads_as_utc() -> None:
    message = pb.ProcessSpec(
        name="p",
        steps=[pb.Step(id="w", timer=pb.Timer(until="09:00"))],
        triggers=[pb.Trigger(schedule=pb.ScheduleTrigger(cron="* * * * *"))],
    )
    spec = spec_from_proto(message)
    assert spec.steps[0].config == TimerConfig(until="09:00", timezone="UTC")
    assert spec.triggers[0] == ScheduleTrigger("* * * * *", "UTC")


# ------------------------------------------------------------------ problems


def test_decoding_reports_every_problem_with_its_path() -> None:
    message = pb.ProcessSpec(
        name="p",
        steps=[
            pb.Step(id="a"),
            pb.Step(id="n", notification=pb.Notification(target="x", message="y")),
            pb.Step(id="t", tool_run=pb.ToolRun()),
            pb.Step(id="w", timeout=duration_pb2.Duration(seconds=1, nanos=1), timer=pb.Timer()),
            pb.Step(id="m", agent_task=pb.AgentTask(max_cost=types_pb2.Money(units=1, nanos=-1))),
            pb.Step(id="g", gateway=pb.Gateway(type=99)),  # type: ignore[arg-type]
        ],
        triggers=[pb.Trigger()],
        outputs=[pb.Output(target="x")],
        budget=pb.Budget(),
    )
    found = problems_decoding(message)
    assert set(found) == {
        "steps[0]",
        "steps[1].notification.channel",
        "steps[2].tool_run.action",
        "steps[3].timeout",
        "steps[4].agent_task.max_cost.nanos",
        "steps[5].gateway.type",
        "triggers[0]",
        "outputs[0].channel",
        "budget.limit",
    }
    assert "has no kind" in found["steps[0]"]
    assert (
        found["steps[1].notification.channel"]
        == "is required (unset): one of webhook, email, slack, file"
    )
    assert "microsecond" in found["steps[3].timeout"]
    assert "unknown enum number 99" in found["steps[5].gateway.type"]


def test_encoding_refuses_what_the_contract_cannot_hold() -> None:
    spec = ProcessSpec(
        "p",
        (
            Step("w", TimerConfig(duration=timedelta(minutes=1), until="09:00")),
            Step(
                "a",
                AgentTaskConfig("x", "y", Money(Decimal("0.0000000001"))),
                retry=RetryPolicy(max_attempts=0, backoff_multiplier=0),
            ),
            Step("h", HumanApprovalConfig(("x",), max_reminders=-1)),
            Step("l", TimerConfig(duration=timedelta(days=4_000_000))),
        ),
        triggers=(ScheduleTrigger("* * * * *", input={"big": 2**60, "set": {1}}),),
    )
    assert set(problems_encoding(spec)) == {
        "steps[0].timer",
        "steps[1].agent_task.max_cost.amount",
        "steps[1].retry.max_attempts",
        "steps[1].retry.backoff_multiplier",
        "steps[2].human_approval.max_reminders",
        "steps[3].timer.duration",
        "triggers[0].schedule.input.big",
        "triggers[0].schedule.input.set",
    }
