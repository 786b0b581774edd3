"""Event triggers: a NATS message on a definition's subject filter starts an execution.

Replicas subscribe in one queue group, so each message reaches one of them; the
message id (Nats-Msg-Id, else ce-id) is the trigger's idempotency key, so a
redelivered or republished message starts nothing twice. A message without an
id cannot be deduplicated and starts an execution each time it arrives.
"""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from trinity_execution import domain as d
from trinity_execution.application.commands import ExecutionCommands
from trinity_execution.infrastructure.transactions import ExecutionSqlUnitOfWork
from trinity_execution.infrastructure.trigger_store import TriggerRow, active_event_triggers
from trinity_execution.loops import trigger_start
from trinity_execution.loops.subject_routes import SubjectRoutes
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
        uow: ExecutionSqlUnitOfWork,
        nats: NATS,
        commands: ExecutionCommands[Any],
        *,
        refresh_interval: float = 2.0,
    ) -> None:
        self._uow = uow
        self._commands = commands
        self._routes = SubjectRoutes(
            nats, QUEUE_GROUP, self._load, self._on_message, refresh_interval=refresh_interval
        )

    async def run(self) -> None:
        await self._routes.run()

    async def refresh(self) -> None:
        """Subscribe to the filters of the active triggers; drop the rest."""
        await self._routes.refresh()

    async def _load(self) -> list[tuple[str, TriggerRow]]:
        rows = await self._uow.read(lambda tx: active_event_triggers(tx.conn))
        return [(row.subject, row) for row in rows]

    async def _on_message(self, msg: Msg, rows: list[TriggerRow], message_id: str) -> None:
        for row in rows:
            await self._start(row, msg, message_id)

    async def _start(self, row: TriggerRow, msg: Msg, message_id: str) -> None:
        key = f"event/{row.definition_id}/{row.position}/{message_id}"
        data = {**row.input, **event_input(msg.data)}
        try:
            await trigger_start.start(
                self._commands,
                row,
                key=key,
                data=data,
                triggered_by=f"event:{msg.subject}",
                kind=d.TriggerKind.EVENT,
            )
        except TrinityError as error:
            _log.warning("event trigger refused", subject=msg.subject, error=error.message)
        except Exception:
            _log.exception("event trigger failed", subject=msg.subject)
