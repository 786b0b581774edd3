"""NATS subjects that wait_for_message steps listen on: each message is delivered like a
SignalExecution (kept when no step waits for it yet).

The subjects are those of the wait_for_message steps of every published version (an
archived version stops listening). Replicas subscribe in one queue group, so each
message reaches one of them. A message is a JSON object whose ``key_field`` holds its
correlation key; its id (Nats-Msg-Id, else ce-id) makes a republished message harmless.
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_execution.application.messages import MessageDelivery, Signal
from trinity_execution.infrastructure.message_store import MessageRoute, active_routes
from trinity_execution.infrastructure.transactions import ExecutionSqlUnitOfWork
from trinity_execution.loops.subject_routes import SubjectRoutes
from trinity_platform.errors import TrinityError
from trinity_platform.logs import get_logger
from trinity_platform.unit_of_work import fingerprint

_log = get_logger(__name__)

QUEUE_GROUP = "trinity-execution-messages"
MAX_MESSAGE_BYTES = 256 * 1024  # as SignalExecution's payload


class MessageListener:
    def __init__(
        self,
        uow: ExecutionSqlUnitOfWork,
        nats: NATS,
        delivery: MessageDelivery,
        *,
        refresh_interval: float = 2.0,
    ) -> None:
        self._uow = uow
        self._delivery = delivery
        self._routes = SubjectRoutes(
            nats, QUEUE_GROUP, self._load, self.receive, refresh_interval=refresh_interval
        )

    async def run(self) -> None:
        await self._routes.run()

    async def refresh(self) -> None:
        await self._routes.refresh()

    async def _load(self) -> list[tuple[str, MessageRoute]]:
        routes = await self._uow.read(lambda tx: active_routes(tx.conn))
        return [(route.subject, route) for route in routes]

    async def receive(self, msg: Msg, routes: list[MessageRoute], message_id: str) -> None:
        payload = _payload(msg.data)
        if payload is None:
            _log.warning("message dropped: not a JSON object", subject=msg.subject)
            return
        seen: set[str] = set()
        for route in routes:
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
                    fingerprint(request),
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
