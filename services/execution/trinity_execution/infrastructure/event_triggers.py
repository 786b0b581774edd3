"""Event triggers: a NATS message on a definition's subject filter starts an execution.

Replicas subscribe in one queue group, so each message reaches one of them; the
message id (Nats-Msg-Id, else ce-id) is the trigger's idempotency key, so a
redelivered or republished message starts nothing twice. A message without an
id cannot be deduplicated and starts an execution each time it arrives.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import defaultdict
from typing import Any

from google.protobuf import struct_pb2
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity.process.execution.v1 import execution_service_pb2
from trinity_execution import domain as d
from trinity_execution.application.commands import ExecutionCommands, Trigger
from trinity_execution.infrastructure.trigger_store import TriggerRow, active_event_triggers
from trinity_platform.db import read_only
from trinity_platform.errors import TrinityError
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

QUEUE_GROUP = "trinity-execution-event-triggers"


def event_input(data: bytes) -> dict[str, Any]:
    """A JSON object payload is the input; anything else is passed as text under `data`."""
    try:
        parsed = json.loads(data) if data else {}
    except ValueError:
        return {"data": data.decode(errors="replace")}
    return parsed if isinstance(parsed, dict) else {"data": parsed}


class EventTriggers:
    def __init__(
        self,
        engine: AsyncEngine,
        nats: NATS,
        commands: ExecutionCommands,
        *,
        refresh_interval: float = 2.0,
    ) -> None:
        self._engine = engine
        self._nats = nats
        self._commands = commands
        self._refresh_interval = refresh_interval
        self._routes: dict[str, list[TriggerRow]] = {}
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
        """Subscribe to the filters of the active triggers; drop the rest."""
        async with read_only(self._engine) as conn:
            rows = await active_event_triggers(conn)
        routes: dict[str, list[TriggerRow]] = defaultdict(list)
        for row in rows:
            routes[row.subject].append(row)
        self._routes = dict(routes)
        for subject in set(self._subscriptions) - set(routes):
            await self._subscriptions.pop(subject).unsubscribe()
        for subject in set(routes) - set(self._subscriptions):
            self._subscriptions[subject] = await self._nats.subscribe(
                subject, queue=QUEUE_GROUP, cb=self._handler(subject)
            )

    def _handler(self, subject_filter: str):  # type: ignore[no-untyped-def]
        async def on_message(msg: Msg) -> None:
            headers = msg.headers or {}
            message_id = headers.get("Nats-Msg-Id") or headers.get("ce-id") or str(uuid.uuid4())
            for row in self._routes.get(subject_filter, []):
                await self._start(row, msg, message_id)

        return on_message

    async def _start(self, row: TriggerRow, msg: Msg, message_id: str) -> None:
        key = f"event/{row.definition_id}/{row.position}/{message_id}"
        data = {**row.input, **event_input(msg.data)}
        request = execution_service_pb2.TriggerProcessRequest(
            request_id=key,
            process_name=row.process_name,
            version=row.process_version,
            input=struct_pb2.Struct(),
            triggered_by=f"event:{msg.subject}",
        )
        request.input.update(data)
        try:
            await self._commands.trigger(
                Trigger(
                    request_id=key,
                    process_name=row.process_name,
                    version=row.process_version,
                    input=data,
                    triggered_by=request.triggered_by,
                    trigger_kind=d.TriggerKind.EVENT,
                ),
                request,
            )
        except TrinityError as error:
            _log.warning("event trigger refused", subject=msg.subject, error=error.message)
        except Exception:
            _log.exception("event trigger failed", subject=msg.subject)
