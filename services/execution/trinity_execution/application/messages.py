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

from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_execution import domain as d
from trinity_execution.application.continuation import Continuation
from trinity_execution.infrastructure.message_store import (
    BufferedMessage,
    Subscription,
    buffer_message,
    count_kept,
    deliverable,
    find_subscription,
    purge_expired,
    take_buffered,
    take_subscription,
)
from trinity_platform.db import read_only
from trinity_platform.errors import NotFound, ResourceExhausted
from trinity_platform.idempotency import lookup, remember, request_fingerprint, run_idempotent
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
        engine: AsyncEngine,
        continuation: Continuation,
        settings: MessageSettings | None = None,
    ) -> None:
        self._engine = engine
        self._continuation = continuation
        self.settings = settings or MessageSettings()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def time_to_live(self, asked: timedelta | None) -> timedelta:
        if asked is None:
            return self.settings.default_ttl
        return min(max(asked, timedelta(0)), self.settings.max_ttl)

    async def signal(self, signal: Signal, request: Message) -> api.SignalExecutionResponse:
        """Deliver now, or keep for its time to live; the same message id answers the same."""
        fingerprint = request_fingerprint(request)
        for _ in range(5):
            async with read_only(self._engine) as conn:
                cached = await lookup(conn, SIGNAL_SCOPE, signal.message_id, fingerprint)
                if cached is not None:
                    return api.SignalExecutionResponse.FromString(cached)
                waiting = await find_subscription(
                    conn, signal.message_name, signal.correlation_key, signal.execution_id
                )
            if waiting is None:
                return await self._keep(signal, request)
            delivered = await self._deliver(waiting, signal, fingerprint)
            if delivered is not None:
                return delivered
        return await self._keep(signal, request)  # the waiters kept changing: keep it

    async def _deliver(
        self, waiting: Subscription, signal: Signal, fingerprint: str
    ) -> api.SignalExecutionResponse | None:
        response = api.SignalExecutionResponse(
            delivered=True, execution_id=waiting.execution_id, step_id=waiting.step_id
        )

        async def take(conn: AsyncConnection) -> bool:
            if not await take_subscription(conn, waiting.key):
                return False
            await remember(
                conn,
                SIGNAL_SCOPE,
                signal.message_id,
                fingerprint,
                response.SerializeToString(deterministic=True),
            )
            return True

        try:
            decision = await self._continuation.apply(
                waiting.execution_id,
                lambda now: _received(waiting, signal.message_id, signal.payload, now),
                guard=take,
                causation_id=signal.message_id,
            )
        except IntegrityError:
            return None  # the same message delivered concurrently: its answer is remembered
        if decision is None:
            return None  # the step stopped waiting meanwhile
        return response

    async def _keep(self, signal: Signal, request: Message) -> api.SignalExecutionResponse:
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
        async with read_only(self._engine) as conn:
            kept = await count_kept(conn, now)
        if kept >= self.settings.max_kept:
            raise ResourceExhausted(
                f"{kept} messages wait for their steps already (the most kept at once); "
                "send it again when a step waits for it",
                reason="TOO_MANY_KEPT_MESSAGES",
            )

        async def keep(conn: AsyncConnection) -> api.SignalExecutionResponse:
            await buffer_message(
                conn,
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
            response = api.SignalExecutionResponse(delivered=False)
            response.expire_time.FromDatetime(expires)
            return response

        response = await run_idempotent(
            self._engine,
            SIGNAL_SCOPE,
            signal.message_id,
            request,
            keep,
            api.SignalExecutionResponse,
            after_commit=self.wake,  # a step may have started waiting meanwhile
        )
        return response

    # ------------------------------------------------------------------ kept ones

    async def deliver_kept(self) -> int:
        """Deliver the kept messages for which a step now waits; drop the expired."""
        now = datetime.now(UTC)
        async with read_only(self._engine) as conn:
            pairs = await deliverable(conn, now)
        delivered = 0
        for kept, waiting in pairs:
            delivered += await self._deliver_kept(kept, waiting)
        async with self._engine.begin() as conn:
            await purge_expired(conn, now)
        return delivered

    async def _deliver_kept(self, kept: BufferedMessage, waiting: Subscription) -> bool:
        async def take(conn: AsyncConnection) -> bool:
            # Both or neither: another replica may be delivering either of them.
            return await take_buffered(conn, kept.id) and await take_subscription(conn, waiting.key)

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
