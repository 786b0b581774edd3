"""What the execution service's application layer needs from the outside world.

infrastructure/ implements these (SQLAlchemy, the definition service over gRPC, the
protobuf answers); bootstrap wires them. Nothing here knows a table, a channel or a
generated message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from trinity_execution import domain as d
from trinity_execution.application.answers import MigrationReport, SignalAnswer
from trinity_platform.errors import Aborted
from trinity_platform.unit_of_work import Idempotency, Transaction, UnitOfWork

T = TypeVar("T")
V = TypeVar("V")


class ConcurrentUpdate(Aborted):
    """Another writer saved the execution first; reload and decide again."""

    default_reason = "CONCURRENT_UPDATE"


class AnswerRemembered(Aborted):
    """A concurrent request remembered an answer under the same key first; ask again."""

    default_reason = "CONCURRENT_UPDATE"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ExecutionRow:
    """An execution as stored: the engine's state (``state``: its compact form without
    the steps; ``steps``: each step's, as its dict or JSON text) and what lists need."""

    id: str
    process_id: str
    process_name: str
    process_version: str
    status: str
    trigger_kind: str
    triggered_by: str
    state: dict[str, Any]
    revision: int
    fact_count: int
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    steps: Mapping[str, Any] = field(default_factory=dict)

    def execution_state(self) -> d.ExecutionState:
        """The engine's state (each step decoded when first read)."""
        return d.ExecutionState.from_parts(self.state, self.steps)


@dataclass(frozen=True)
class Written:
    """What a decision wrote, so the caller knows whom to wake after the commit."""

    facts: int
    dispatches: int
    reported: tuple[d.Fact, ...] = ()
    subscriptions: int = 0
    """Message subscriptions opened: a message kept earlier may now be delivered."""


@dataclass(frozen=True)
class LoggedFact:
    """One fact of an execution's own log (its encoded message and CloudEvents type)."""

    sequence: int
    ce_type: str
    payload: bytes
    occur_time: datetime


@dataclass(frozen=True)
class Subscription:
    key: str
    execution_id: str
    step_id: str
    iteration: int
    attempt: int
    message_name: str
    correlation_key: str


@dataclass(frozen=True)
class BufferedMessage:
    id: str
    message_name: str
    correlation_key: str
    execution_id: str
    payload: dict[str, Any]
    expires_at: datetime


@dataclass(frozen=True)
class ListFilter:
    process_name: str = ""
    status: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class PublishedDefinition:
    id: str
    name: str
    version: str
    process: d.CompiledProcess


# --------------------------------------------------------------------------- ports


class DefinitionCatalog(Protocol):
    async def by_name(self, name: str, version: str = "") -> PublishedDefinition:
        """The named version, or the latest one; refuses drafts and archived latest
        versions (FAILED_PRECONDITION), NOT_FOUND, UNAVAILABLE when the service is down."""
        ...

    async def by_id(self, definition_id: str) -> PublishedDefinition:
        """A version an execution already runs (archived ones included)."""
        ...


class ExecutionRepository(Protocol):
    async def load(self, execution_id: str, *, for_update: bool = False) -> ExecutionRow | None: ...

    async def load_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRow]:
        """The executions of ``execution_ids`` that exist, by id (one read for many)."""
        ...

    async def insert(self, row: ExecutionRow, *, fact_count: int) -> None:
        """A new execution whose first decision wrote ``fact_count`` facts."""
        ...

    async def check_revision(self, execution_id: str, revision: int) -> None:
        """Raise ConcurrentUpdate unless the execution is still at ``revision``."""
        ...

    async def of_version(
        self, process_name: str, version: str, statuses: tuple[str, ...], limit: int
    ) -> list[str]:
        """Ids of the executions of one process version in these statuses, oldest first."""
        ...

    async def repoint(self, execution_id: str, *, process_id: str, process_version: str) -> None:
        """Record the version a migrated execution now runs."""
        ...

    async def page(
        self, where: ListFilter, after: tuple[datetime, str] | None, limit: int
    ) -> list[ExecutionRow]:
        """Newest first (created_at, then id, descending), strictly after ``after``."""
        ...


class FactLog(Protocol):
    async def after(
        self, execution_id: str, after_sequence: int, limit: int = 500
    ) -> list[LoggedFact]: ...


class MessageStore(Protocol):
    async def find_subscription(
        self, message_name: str, correlation_key: str, execution_id: str = ""
    ) -> Subscription | None:
        """The oldest step attempt waiting for the message (of ``execution_id`` when given)."""
        ...

    async def take_subscription(self, key: str) -> bool:
        """Remove the subscription for a delivery; False when it is gone already."""
        ...

    async def keep(self, message: BufferedMessage, now: datetime) -> bool: ...

    async def take_kept(self, message_id: str) -> bool: ...

    async def count_kept(self, now: datetime) -> int: ...

    async def deliverable(self, now: datetime) -> list[tuple[BufferedMessage, Subscription]]:
        """Kept messages for which a step now waits (oldest message first)."""
        ...

    async def purge_expired(self, now: datetime) -> int: ...


class TimerClaims(Protocol):
    async def claim(self, timer_id: str) -> bool:
        """Mark a pending timer fired; False if it already fired or was cancelled."""
        ...


class IdempotencyStore(Protocol):
    async def lookup(self, scope: str, key: str, fingerprint: str) -> bytes | None:
        """The remembered answer; FAILED_PRECONDITION (IDEMPOTENCY_KEY_REUSED) when the
        key was used with another request."""
        ...

    async def remember(self, scope: str, key: str, fingerprint: str, answer: bytes) -> None:
        """Raises AnswerRemembered when a concurrent request remembered one first."""
        ...


class ExecutionTransaction(Transaction, Protocol):
    """One open transaction and everything the application reads and writes in it (the
    platform's inbox claim and wake-ups after the commit included)."""

    @property
    def executions(self) -> ExecutionRepository: ...

    @property
    def facts(self) -> FactLog: ...

    @property
    def messages(self) -> MessageStore: ...

    @property
    def timers(self) -> TimerClaims: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    async def write_decision(
        self,
        row: ExecutionRow,
        decision: d.Decision,
        now: datetime,
        *,
        causation_id: str = "",
        new: bool = False,
    ) -> Written:
        """The decision's new state (checked against ``row.revision`` unless ``new``;
        ConcurrentUpdate), facts (outbox and fact log), commands and timers."""
        ...


ExecutionUnitOfWork = UnitOfWork[ExecutionTransaction]
"""The platform's unit of work over the execution service's transactions."""


def remembered_answer(
    scope: str,
    key: str,
    fingerprint: str,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes], T],
    *,
    look_up_first: bool = True,
) -> Idempotency[ExecutionTransaction, T]:
    """A write made idempotent by ``key`` (empty: not idempotent) that remembers its
    answer itself: an execution keeps no past states to rebuild the answer of then from
    (as definitions keep no past revisions), so a retry gets the first answer back.
    ``look_up_first``: see :class:`Idempotency`."""

    async def replay(_tx: ExecutionTransaction, remembered: bytes) -> T:
        return decode(remembered)

    return Idempotency(
        scope, key, fingerprint, remember=encode, replay=replay, look_up_first=look_up_first
    )


class Presenter(Protocol[V]):
    """How answers are shaped for the caller and remembered for a retry (the API's types)."""

    def execution(
        self,
        process: d.CompiledProcess,
        state: d.ExecutionState,
        *,
        process_name: str,
        created_at: datetime,
        with_steps: bool = True,
    ) -> V: ...

    def encode_execution(self, view: V) -> bytes: ...

    def decode_execution(self, data: bytes) -> V: ...

    def encode_signal(self, answer: SignalAnswer) -> bytes: ...

    def decode_signal(self, data: bytes) -> SignalAnswer: ...

    def encode_migration(self, report: MigrationReport) -> bytes: ...

    def decode_migration(self, data: bytes) -> MigrationReport: ...
