"""NATS subjects that wait_for_message steps listen on: each message is delivered like a
SignalExecution (kept when no step waits for it yet).

The subjects are those of the wait_for_message steps of every published version (an
archived version stops listening). Replicas subscribe in one queue group, so each
message reaches one of them. A message is a JSON object whose ``key_field`` holds its
correlation key; its id (Nats-Msg-Id, else ce-id) makes a republished message harmless.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_execution.application.messages import MessageDelivery, Signal
from trinity_execution.infrastructure.message_store import MessageRoute, active_routes
from trinity_platform.db import read_only
from trinity_platform.errors import TrinityError
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

QUEUE_GROUP = "trinity-execution-messages"
MAX_MESSAGE_BYTES = 256 * 1024  # as SignalExecution's payload


class MessageListener:
    def __init__(
        self,
        engine: AsyncEngine,
        nats: NATS,
        delivery: MessageDelivery,
        *,
        refresh_interval: float = 2.0,
    ) -> None:
        self._engine = engine
        self._nats = nats
        self._delivery = delivery
        self._refresh_interval = refresh_interval
        self._routes: dict[str, list[MessageRoute]] = {}
        self._subscriptions: dict[str, Subscription] = {}

    async def run(self) -> None:
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self._refresh_interval)
        finally:
            for subscription in self._subscriptions.values():
                await subscription.unsubscribe()
            self._subscriptions.clear()

    async def refresh(self) -> None:
        async with read_only(self._engine) as conn:
            routes = await active_routes(conn)
        by_subject: dict[str, list[MessageRoute]] = defaultdict(list)
        for route in routes:
            by_subject[route.subject].append(route)
        self._routes = dict(by_subject)
        for subject in set(self._subscriptions) - set(by_subject):
            await self._subscriptions.pop(subject).unsubscribe()
        for subject in set(by_subject) - set(self._subscriptions):
            self._subscriptions[subject] = await self._nats.subscribe(
                subject, queue=QUEUE_GROUP, cb=self._handler(subject)
            )

    def _handler(self, subject: str):  # type: ignore[no-untyped-def]
        async def on_message(msg: Msg) -> None:
            await self.receive(subject, msg)

        return on_message

    async def receive(self, subject: str, msg: Msg) -> None:
        headers = msg.headers or {}
        message_id = headers.get("Nats-Msg-Id") or headers.get("ce-id") or str(uuid.uuid4())
        payload = _payload(msg.data)
        if payload is None:
            _log.warning("message dropped: not a JSON object", subject=msg.subject)
            return
        seen: set[str] = set()
        for route in self._routes.get(subject, []):
            if route.message_name in seen:
                continue
            seen.add(route.message_name)
            key = payload.get(route.key_field)
            if key is None or isinstance(key, dict | list):
                _log.warning(
                    "message dropped: no correlation key",
                    subject=msg.subject,
                    message=route.message_name,
                    key_field=route.key_field,
                )
                continue
            correlation_key = _key_text(key)
            request = api.SignalExecutionRequest(
                request_id=f"nats/{message_id}/{route.message_name}"[:255],
                message_name=route.message_name,
                correlation_key=correlation_key,
            )
            request.payload.update(payload)
            try:
                await self._delivery.signal(
                    Signal(
                        message_id=request.request_id,
                        message_name=route.message_name,
                        correlation_key=correlation_key,
                        payload=payload,
                    ),
                    request,
                )
            except TrinityError as error:
                _log.warning("message refused", subject=msg.subject, error=error.message)
            except Exception:
                _log.exception("message delivery failed", subject=msg.subject)


def _payload(data: bytes) -> dict[str, Any] | None:
    if len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _key_text(key: object) -> str:
    """A correlation key as text: 42 and "42" are the same key (JSON numbers may be 42.0)."""
    if isinstance(key, bool):
        return str(key).lower()
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return str(key)
