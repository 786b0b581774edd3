"""The process definition language: what an author writes, as pure values.

Shared kernel of the definition service (which stores and validates it), the
execution engine (which runs it) and the CLI (which reads and writes it). Only
the standard library here; translators to protobuf and YAML live beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any


class StepKind(StrEnum):
    AGENT_TASK = "agent_task"
    HUMAN_APPROVAL = "human_approval"
    GATEWAY = "gateway"
    TIMER = "timer"
    NOTIFICATION = "notification"
    TOOL_RUN = "tool_run"
    WAIT_FOR_MESSAGE = "wait_for_message"
    SUB_PROCESS = "sub_process"


class GatewayType(StrEnum):
    EXCLUSIVE = "exclusive"
    PARALLEL = "parallel"
    INCLUSIVE = "inclusive"


class TimeoutAction(StrEnum):
    NOTIFY = "notify"
    REJECT = "reject"
    AUTO_APPROVE = "auto_approve"


class RejectAction(StrEnum):
    """What a rejection of an approval does: fail the step (stop the path) or continue."""

    FAIL = "fail"
    CONTINUE = "continue"


class Channel(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    SLACK = "slack"
    FILE = "file"


class ActionKind(StrEnum):
    SCAFFOLD = "scaffold"
    GENERATE = "generate"
    VERIFY = "verify"
    PUBLISH = "publish"


class FailureAction(StrEnum):
    FAIL = "fail"
    CONTINUE = "continue"


class BudgetAction(StrEnum):
    FAIL = "fail"
    PAUSE = "pause"


class InputType(StrEnum):
    """JSON Schema's type names for a declared input."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"


class MessageTimeoutAction(StrEnum):
    """What a wait for a message does when its step's timeout passes."""

    FAIL = "fail"
    CONTINUE = "continue"


class CurrencyMismatch(ValueError):
    """Two amounts of different currencies were combined."""


@dataclass(frozen=True, order=False)
class Money:
    """An exact amount of one currency."""

    amount: Decimal
    currency: str = "USD"

    @classmethod
    def zero(cls, currency: str = "USD") -> Money:
        return cls(Decimal(0), currency)

    def _check(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __ge__(self, other: Money) -> bool:
        self._check(other)
        return self.amount >= other.amount

    def __gt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount > other.amount

    def __le__(self, other: Money) -> bool:
        self._check(other)
        return self.amount <= other.amount

    def __lt__(self, other: Money) -> bool:
        self._check(other)
        return self.amount < other.amount

    def scaled(self, factor: Decimal) -> Money:
        return Money(self.amount * factor, self.currency)

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


@dataclass(frozen=True)
class RetryPolicy:
    """How failed attempts of a step are retried. max_attempts counts the first attempt."""

    max_attempts: int = 1
    initial_backoff: timedelta = timedelta(seconds=1)
    backoff_multiplier: float = 2.0
    max_backoff: timedelta = timedelta(minutes=5)
    non_retryable_codes: tuple[str, ...] = ()

    def backoff_before(self, attempt: int) -> timedelta:
        """Delay before attempt number `attempt` (2 is the first retry)."""
        if attempt <= 1:
            return timedelta(0)
        delay = self.initial_backoff * (self.backoff_multiplier ** (attempt - 2))
        return min(delay, self.max_backoff)

    def allows_retry(self, attempt: int, error_code: str) -> bool:
        """Whether a failure of attempt `attempt` with `error_code` gets another attempt."""
        return attempt < self.max_attempts and error_code not in self.non_retryable_codes


@dataclass(frozen=True)
class AgentTaskConfig:
    agent: str
    message: str
    max_cost: Money | None = None
    for_each: str = ""
    """When set: one task per item of this list (see SubProcessConfig.for_each); the
    message reads ``item`` and ``item_index``."""
    max_concurrency: int = 0
    max_items: int = 0
    tolerated_failures: int = 0


@dataclass(frozen=True)
class HumanApprovalConfig:
    approvers: tuple[str, ...]
    on_timeout: TimeoutAction = TimeoutAction.REJECT
    artifacts: tuple[str, ...] = ()
    title: str = ""
    reminder_interval: timedelta | None = None
    max_reminders: int = 0
    on_reject: RejectAction = RejectAction.FAIL


@dataclass(frozen=True)
class Route:
    """One way out of a gateway. A route back to an earlier step is a loop."""

    target: str
    condition: str = ""
    is_default: bool = False
    max_iterations: int = 0


@dataclass(frozen=True)
class GatewayConfig:
    type: GatewayType
    routes: tuple[Route, ...]

    @property
    def default_route(self) -> Route | None:
        return next((r for r in self.routes if r.is_default), None)


@dataclass(frozen=True)
class TimerConfig:
    """Wait `duration`, or until the wall-clock time `until` in `timezone`."""

    duration: timedelta | None = None
    until: str = ""
    timezone: str = "UTC"


@dataclass(frozen=True)
class NotificationConfig:
    channel: Channel
    target: str
    message: str
    subject: str = ""


@dataclass(frozen=True)
class ToolRunConfig:
    action: ActionKind
    arguments: dict[str, str] = field(default_factory=dict)
    for_each: str = ""
    """When set: one run per item of this list (see SubProcessConfig.for_each); the
    arguments read ``item`` and ``item_index``."""
    max_concurrency: int = 0
    max_items: int = 0
    tolerated_failures: int = 0


DEFAULT_KEY_FIELD = "correlation_key"


@dataclass(frozen=True)
class WaitForMessageConfig:
    """Wait until a message named ``message`` arrives whose correlation key equals the
    rendered ``correlation_key``: by SignalExecution, or on the NATS ``subject`` (a JSON
    message whose ``key_field`` holds its key). Its payload becomes the step's output."""

    message: str
    correlation_key: str
    subject: str = ""
    key_field: str = DEFAULT_KEY_FIELD
    on_timeout: MessageTimeoutAction = MessageTimeoutAction.FAIL


@dataclass(frozen=True)
class SubProcessConfig:
    """Run another published process (by name; its latest version unless ``version`` is
    given) as a child execution, with an input built from templates (each renders to
    text; an input the child declares with a non-string type is read as JSON). The
    output of the child's last completed step becomes the step's output."""

    process: str
    version: str = ""
    input: dict[str, str] = field(default_factory=dict)
    for_each: str = ""
    """When set: an expression giving a list; one child runs per item (templates of
    ``input`` read ``item`` and ``item_index``), outputs collected in order."""
    max_concurrency: int = 0
    """Children of a for_each running at once (0: DEFAULT_MAX_CONCURRENCY)."""
    max_items: int = 0
    """Most items a for_each takes (0: MAX_FOR_EACH_ITEMS); more fails the step."""
    tolerated_failures: int = 0
    """Failed items a for_each tolerates (0: fail fast, at the first failure)."""


DEFAULT_MAX_CONCURRENCY = 10
MAX_FOR_EACH_ITEMS = 1_000


StepConfig = (
    AgentTaskConfig
    | HumanApprovalConfig
    | GatewayConfig
    | TimerConfig
    | NotificationConfig
    | ToolRunConfig
    | WaitForMessageConfig
    | SubProcessConfig
)

_KIND_OF_CONFIG: dict[type, StepKind] = {
    AgentTaskConfig: StepKind.AGENT_TASK,
    HumanApprovalConfig: StepKind.HUMAN_APPROVAL,
    GatewayConfig: StepKind.GATEWAY,
    TimerConfig: StepKind.TIMER,
    NotificationConfig: StepKind.NOTIFICATION,
    ToolRunConfig: StepKind.TOOL_RUN,
    WaitForMessageConfig: StepKind.WAIT_FOR_MESSAGE,
    SubProcessConfig: StepKind.SUB_PROCESS,
}


COMPENSATION_KINDS = frozenset({StepKind.AGENT_TASK, StepKind.TOOL_RUN, StepKind.NOTIFICATION})
"""What a compensation can be: work, never a wait."""
COMPENSABLE_KINDS = frozenset(
    {StepKind.AGENT_TASK, StepKind.TOOL_RUN, StepKind.NOTIFICATION, StepKind.SUB_PROCESS}
)
"""Steps whose completion may have changed the world, so they may declare ``compensate``
(gateways, timers, approvals and waits change nothing outside the execution)."""

CompensationConfig = AgentTaskConfig | ToolRunConfig | NotificationConfig


@dataclass(frozen=True)
class Compensation:
    """What undoes a completed step when the execution fails or is cancelled with
    compensation: an agent task, a tool run or a notification, with its own retry policy
    (None: the process's ``default_retry``). Its templates also read ``step``: the
    compensated step as it completed (that iteration)."""

    config: CompensationConfig
    retry: RetryPolicy | None = None
    timeout: timedelta | None = None
    """How long one attempt may run (the work service ends it with TIMEOUT)."""

    @property
    def kind(self) -> StepKind:
        return _KIND_OF_CONFIG[type(self.config)]


@dataclass(frozen=True)
class Step:
    id: str
    config: StepConfig
    name: str = ""
    depends_on: tuple[str, ...] = ()
    condition: str = ""
    retry: RetryPolicy | None = None
    timeout: timedelta | None = None
    on_failure: FailureAction = FailureAction.FAIL
    informed: tuple[str, ...] = ()
    compensate: Compensation | None = None

    @property
    def kind(self) -> StepKind:
        return _KIND_OF_CONFIG[type(self.config)]

    @property
    def display_name(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class ManualTrigger:
    pass


@dataclass(frozen=True)
class ScheduleTrigger:
    cron: str
    timezone: str = "UTC"
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventTrigger:
    subject: str


Trigger = ManualTrigger | ScheduleTrigger | EventTrigger


@dataclass(frozen=True)
class Output:
    channel: Channel
    target: str
    message: str
    subject: str = ""


@dataclass(frozen=True)
class Budget:
    limit: Money
    on_exceeded: BudgetAction = BudgetAction.FAIL


_NO_DEFAULT: Any = None


@dataclass(frozen=True)
class InputDeclaration:
    """One declared input of a process: a typed, optionally required JSON value."""

    name: str
    type: InputType
    required: bool = False
    has_default: bool = False
    default: Any = _NO_DEFAULT  # a JSON value; meaningful only when has_default
    description: str = ""


@dataclass(frozen=True)
class ProcessSpec:
    """The authored content of a process definition."""

    name: str
    steps: tuple[Step, ...]
    description: str = ""
    triggers: tuple[Trigger, ...] = ()
    outputs: tuple[Output, ...] = ()
    budget: Budget | None = None
    default_retry: RetryPolicy | None = None
    labels: dict[str, str] = field(default_factory=dict)
    inputs: tuple[InputDeclaration, ...] = ()

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def retry_policy_of(self, step: Step) -> RetryPolicy:
        return step.retry or self.default_retry or RetryPolicy()

    def compensation_retry_policy(self, compensation: Compensation) -> RetryPolicy:
        return compensation.retry or self.default_retry or RetryPolicy()
