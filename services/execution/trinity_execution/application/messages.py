"""Delivering messages to wait_for_message steps (SignalExecution and NATS subjects).

A message for which a step waits completes it at once: the subscription is taken (a
delete that must find its row) in the transaction of the engine's decision, with the
idempotency record of the message id, so a message completes one step attempt once.
A message nobody waits for yet is kept until it expires (its time to live, bounded by
the deployment's maximum) and delivered when a step starts waiting for it: the
decision that opens a subscription wakes :meth:`MessageDelivery.deliver_kept`, which
also polls, so a kept message is never stranded by a lost wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from trinity_execution import domain as d
from trinity_execution.application.answers import SignalAnswer
from trinity_execution.application.continuation import Continuation
from trinity_execution.application.ports import (
    AnswerRemembered,
    BufferedMessage,
    ExecutionTransaction,
    ExecutionUnitOfWork,
    Presenter,
    Subscription,
    remembered_answer,
)
from trinity_platform.errors import NotFound, ResourceExhausted
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

SIGNAL_SCOPE = "execution.SignalExecution"
NO_SUBSCRIBER = "NO_MESSAGE_SUBSCRIBER"


@dataclass(frozen=True)
class MessageSettings:
    default_ttl: timedelta = timedelta(hours=1)
    """How long a message nobody waits for is kept when the sender does not say."""
    max_ttl: timedelta = timedelta(days=7)
    """The longest a sender may ask a message to be kept."""
    poll_interval: float = 2.0
    max_kept: int = 10_000
    """Messages kept at once; past it, early messages are refused (RESOURCE_EXHAUSTED)."""


@dataclass(frozen=True)
class Signal:
    message_id: str
    message_name: str
    correlation_key: str
    payload: dict[str, Any]
    execution_id: str = ""
    time_to_live: timedelta | None = None


class MessageDelivery:
    def __init__(
        self,
        uow: ExecutionUnitOfWork,
        continuation: Continuation,
        presenter: Presenter[Any],
        settings: MessageSettings | None = None,
    ) -> None:
        self._uow = uow
        self._presenter = presenter
        self._continuation = continuation
        self.settings = settings or MessageSettings()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def time_to_live(self, asked: timedelta | None) -> timedelta:
        if asked is None:
            return self.settings.default_ttl
        return min(max(asked, timedelta(0)), self.settings.max_ttl)

    async def signal(self, signal: Signal, fingerprint: str) -> SignalAnswer:
        """Deliver now, or keep for its time to live; the same message id answers the same."""

        async def waiting_or_answered(
            tx: ExecutionTransaction,
        ) -> tuple[bytes | None, Subscription | None]:
            cached = await tx.idempotency.lookup(SIGNAL_SCOPE, signal.message_id, fingerprint)
            if cached is not None:
                return cached, None
            waiting = await tx.messages.find_subscription(
                signal.message_name, signal.correlation_key, signal.execution_id
            )
            return None, waiting

        for _ in range(5):
            cached, waiting = await self._uow.read(waiting_or_answered)
            if cached is not None:
                return self._presenter.decode_signal(cached)
            if waiting is None:
                return await self._keep(signal, fingerprint)
            delivered = await self._deliver(waiting, signal, fingerprint)
            if delivered is not None:
                return delivered
        return await self._keep(signal, fingerprint)  # the waiters kept changing: keep it

    async def _deliver(
        self, waiting: Subscription, signal: Signal, fingerprint: str
    ) -> SignalAnswer | None:
        response = SignalAnswer(
            delivered=True, execution_id=waiting.execution_id, step_id=waiting.step_id
        )

        async def take(tx: ExecutionTransaction) -> bool:
            if not await tx.messages.take_subscription(waiting.key):
                return False
            await tx.idempotency.remember(
                SIGNAL_SCOPE,
                signal.message_id,
                fingerprint,
                self._presenter.encode_signal(response),
            )
            return True

        try:
            decision = await self._continuation.apply(
                waiting.execution_id,
                lambda now: _received(waiting, signal.message_id, signal.payload, now),
                guard=take,
                causation_id=signal.message_id,
            )
        except AnswerRemembered:
            return None  # the same message delivered concurrently: its answer is remembered
        if decision is None:
            return None  # the step stopped waiting meanwhile
        return response

    async def _keep(self, signal: Signal, fingerprint: str) -> SignalAnswer:
        ttl = self.time_to_live(signal.time_to_live)
        if ttl <= timedelta(0):
            raise NotFound(
                f"no step waits for message {signal.message_name!r}"
                + (
                    f" of execution {signal.execution_id}"
                    if signal.execution_id
                    else f" with correlation key {signal.correlation_key!r}"
                ),
                reason=NO_SUBSCRIBER,
            )
        now = datetime.now(UTC)
        expires = now + ttl
        kept = await self._uow.read(lambda tx: tx.messages.count_kept(now))
        if kept >= self.settings.max_kept:
            raise ResourceExhausted(
                f"{kept} messages wait for their steps already (the most kept at once); "
                "send it again when a step waits for it",
                reason="TOO_MANY_KEPT_MESSAGES",
            )

        async def keep(tx: ExecutionTransaction) -> SignalAnswer:
            await tx.messages.keep(
                BufferedMessage(
                    id=signal.message_id,
                    message_name=signal.message_name,
                    correlation_key=signal.correlation_key,
                    execution_id=signal.execution_id,
                    payload=signal.payload,
                    expires_at=expires,
                ),
                now,
            )
            tx.after_commit(self.wake)  # a step may have started waiting meanwhile
            return SignalAnswer(delivered=False, expires_at=expires)

        presenter = self._presenter
        response = await self._uow.write(
            keep,
            idempotency=remembered_answer(
                SIGNAL_SCOPE,
                signal.message_id,
                fingerprint,
                presenter.encode_signal,
                presenter.decode_signal,
            ),
        )
        return response

    # ------------------------------------------------------------------ kept ones

    async def deliver_kept(self) -> int:
        """Deliver the kept messages for which a step now waits; drop the expired."""
        now = datetime.now(UTC)
        pairs = await self._uow.read(lambda tx: tx.messages.deliverable(now))
        delivered = 0
        for kept, waiting in pairs:
            delivered += await self._deliver_kept(kept, waiting)
        await self._uow.write(lambda tx: tx.messages.purge_expired(now))
        return delivered

    async def _deliver_kept(self, kept: BufferedMessage, waiting: Subscription) -> bool:
        async def take(tx: ExecutionTransaction) -> bool:
            # Both or neither: another replica may be delivering either of them.
            return await tx.messages.take_kept(kept.id) and await tx.messages.take_subscription(
                waiting.key
            )

        decision = await self._continuation.apply(
            waiting.execution_id,
            lambda now: _received(waiting, kept.id, kept.payload, now),
            guard=take,
            causation_id=kept.id,
        )
        return decision is not None

    async def run(self) -> None:
        while True:
            try:
                await self.deliver_kept()
            except Exception:
                _log.exception("delivering kept messages failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()


def _received(
    waiting: Subscription, message_id: str, payload: dict[str, Any], now: datetime
) -> d.MessageReceived:
    return d.MessageReceived(
        now=now,
        step_id=waiting.step_id,
        iteration=waiting.iteration,
        attempt=waiting.attempt,
        message_id=message_id,
        payload=payload,
    )
