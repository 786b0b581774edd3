"""The unit of work every service writes through: the port its application layer sees.

One transaction per command, and everything the invariants tie to it:

* the aggregates' new events become outbox rows in that transaction (invariant 1),
  each with the one message-id scheme (:func:`event_message_id`);
* a command with an idempotency key is looked up and remembered in that transaction
  (invariant 2); what is remembered is a *reference* to the result (an aggregate id),
  and a retry is answered by rebuilding the result from it (:class:`Idempotency`);
* a consumer claims a message id in that transaction (:meth:`Transaction.claim_message`);
* a lost race (:class:`~trinity_platform.errors.Conflict`, a unique key taken
  meanwhile, a serialization failure) runs the command again on fresh state, under
  one :class:`RetryPolicy`;
* a database that cannot serve is answered ``UNAVAILABLE`` (``DATABASE_UNAVAILABLE``),
  mapped once in :mod:`trinity_platform.db_errors`;
* wake-ups (the relay, a sender, a watcher) run only after the commit.

This module is the port: pure (no SQLAlchemy), so ``application/`` may import it. The
SQLAlchemy implementation is :mod:`trinity_platform.sql_unit_of_work`; a service
subclasses its ``SqlTransaction`` with its repositories and wires ``SqlUnitOfWork``
in its composition root.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")
S = TypeVar("S")
S_co = TypeVar("S_co", covariant=True)

# Namespace of outbox message ids derived from an aggregate's change (uuid5).
MESSAGE_ID_NAMESPACE = uuid.UUID("0c7a3e52-8d0f-4b5e-9f61-7472696e6974")


# --------------------------------------------------------------------------- fingerprint


def fingerprint(command: object, *, without: Sequence[str] = ("request_id",)) -> str:
    """sha256 (hex) of what a command asks, without its idempotency key (and ``without``).

    The same key with another fingerprint is refused (``IDEMPOTENCY_KEY_REUSED``).
    ``command`` is a dataclass (an application command) or a protobuf message (a
    request): a message is its type's full name and deterministic encoding; a
    dataclass is its type's name and its values as canonical JSON.
    """
    if isinstance(command, Message):
        copy = type(command)()
        copy.CopyFrom(command)
        for name in without:
            if name in copy.DESCRIPTOR.fields_by_name:
                copy.ClearField(name)
        digest = hashlib.sha256(copy.DESCRIPTOR.full_name.encode())
        digest.update(b"\0")
        digest.update(copy.SerializeToString(deterministic=True))
        return digest.hexdigest()
    if dataclasses.is_dataclass(command) and not isinstance(command, type):
        data = {
            f.name: getattr(command, f.name)
            for f in dataclasses.fields(command)
            if f.name not in without
        }
        encoded = json.dumps(
            {"type": type(command).__name__, "data": data}, sort_keys=True, default=_json_value
        )
        return hashlib.sha256(encoded.encode()).hexdigest()
    raise TypeError(f"cannot fingerprint a {type(command).__name__}: pass a dataclass or message")


# --------------------------------------------------------------------------- idempotency


@dataclass(frozen=True)
class Idempotency(Generic[S, T]):
    """How a command is made idempotent by its key.

    ``remember(result)`` is what is stored with the key; ``replay(transaction,
    remembered)`` answers a retry from it, in the retry's transaction. Build it with
    :meth:`by_reference` (remember the aggregate's id, rebuild the result from it);
    remember the answer itself only where the service cannot rebuild the answer of
    then (a definition keeps no past revisions). An empty ``key`` means the command
    is not idempotent. ``earlier`` are the fingerprints an earlier release stored for
    this same request (a service whose scheme changed): a retry that spans the upgrade
    is then answered, not refused as a reused key.

    ``look_up_first=False`` is for commands whose keys are nearly always new (a
    service's own first requests, on the hot path): the body runs without a look-up
    and the key is remembered only if it is new; a key remembered already, or a body
    that fails (perhaps because the first request made it so), runs the command
    again with the look-up first. A retry then runs the body once in a transaction
    that rolls back: only for a body with no effect outside its transaction. It
    saves one statement per command.
    """

    scope: str
    key: str
    fingerprint: str
    remember: Callable[[T], bytes]
    replay: Callable[[S, bytes], Awaitable[T]]
    earlier: tuple[str, ...] = ()
    look_up_first: bool = True

    @classmethod
    def by_reference(
        cls,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        reference: Callable[[T], str],
        load: Callable[[S, str], Awaitable[T]],
        earlier: tuple[str, ...] = (),
        look_up_first: bool = True,
    ) -> Idempotency[S, T]:
        """Remember ``reference(result)`` (e.g. its id); a retry answers ``load`` of it."""

        def replay(transaction: S, remembered: bytes) -> Awaitable[T]:
            return load(transaction, remembered.decode())

        return cls(
            scope,
            key,
            fingerprint,
            lambda result: reference(result).encode(),
            replay,
            earlier,
            look_up_first,
        )


# --------------------------------------------------------------------------- outbox


@dataclass(frozen=True)
class EventMessage:
    """One message an aggregate's event becomes: a fact, or an intent to a queue."""

    message: Message
    subject: str
    correlation_id: str = ""
    causation_id: str = ""


@dataclass(frozen=True)
class NewEvents:
    """The messages of one aggregate's change, taken from it before the commit.

    ``version`` is the aggregate's version (revision) after the change: with the
    aggregate's kind, id and each message's position it makes the message id, so a
    write repeated by mistake collides instead of publishing twice.
    """

    kind: str
    aggregate_id: str
    version: int
    messages: Sequence[EventMessage]


def _json_value(value: object) -> object:
    """A nested dataclass as its fields (JSON encodes them), anything else as ``str``:
    the JSON ``dataclasses.asdict`` gave, without its deep copy of every value (the
    fingerprints remembered before stay the same)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return str(value)


def event_message_id(kind: str, aggregate_id: str, version: int, index: int) -> str:
    """The one message-id scheme of facts and intents from an aggregate's change."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{kind}/{aggregate_id}/{version}/{index}"))


# --------------------------------------------------------------------------- conflicts


@dataclass(frozen=True)
class RetryPolicy:
    """How often a command that lost a race runs again, and how long it waits first.

    The wait is exponential with full jitter (``base * 2**attempt``, capped), so
    replicas that collided do not collide again in step.
    """

    attempts: int = 20
    base_delay: float = 0.002
    max_delay: float = 0.1

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


CONFLICT_RETRY = RetryPolicy()


# --------------------------------------------------------------------------- the port


class Transaction(Protocol):
    """What every transaction offers besides the service's repositories."""

    async def claim_message(self, consumer: str, message_id: str) -> bool:
        """Record ``message_id`` as processed by ``consumer``; False when it already was
        (a redelivery: the effect is already there)."""
        ...

    def after_commit(self, wake: Callable[[], None]) -> None:
        """Run ``wake`` after this transaction commits (never when it rolls back)."""
        ...


class UnitOfWork(Protocol[S_co]):
    """Runs application code in transactions of type ``S`` (the service's repositories)."""

    async def read(self, body: Callable[[S_co], Awaitable[T]]) -> T:
        """``body`` in a transaction that writes nothing (on SQLite it takes no write lock)."""
        ...

    async def write(
        self,
        body: Callable[[S_co], Awaitable[T]],
        *,
        idempotency: Idempotency[Any, T] | None = None,
        grouped: bool = False,
    ) -> T:
        """``body`` in a write transaction, committed with the new events' outbox rows.

        With ``idempotency`` (and a key): a key seen before answers ``replay`` of the
        remembered reference, and ``body`` does not run (or runs in a transaction that
        rolls back: ``Idempotency.look_up_first``); a key seen with another
        fingerprint is refused. A lost race runs ``body`` again (``RetryPolicy``).
        ``grouped``: the grouped writes handed in while one runs share the next
        transaction (group commit); one's refusal is its own.
        """
        ...


__all__ = [
    "CONFLICT_RETRY",
    "EventMessage",
    "Idempotency",
    "NewEvents",
    "RetryPolicy",
    "Transaction",
    "UnitOfWork",
    "event_message_id",
    "fingerprint",
]
