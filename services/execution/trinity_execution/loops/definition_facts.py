"""Keeps the triggers table in step with the definition service's facts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from trinity.process.definition.v1 import definition_pb2
from trinity.process.definition.v1 import facts_pb2 as definition_facts
from trinity_execution.infrastructure.message_store import (
    MessageRoute,
    deactivate_routes,
    replace_routes,
)
from trinity_execution.infrastructure.transactions import (
    ExecutionSqlUnitOfWork,
    SqlExecutionTransaction,
)
from trinity_execution.infrastructure.translate import struct_to_dict
from trinity_execution.infrastructure.trigger_store import (
    EVENT,
    SCHEDULE,
    TriggerRow,
    deactivate_definition,
    replace_triggers,
)
from trinity_execution.loops.schedules import next_fire_time
from trinity_platform.consumer import Ack, Outcome
from trinity_platform.envelope import Envelope, EnvelopeError, decode
from trinity_platform.logs import get_logger
from trinity_platform.runtime import ConsumerSpec
from trinity_platform.subjects import fact_subject, facts_stream
from trinity_process_model.model import DEFAULT_KEY_FIELD

_log = get_logger(__name__)

CONSUMER = "execution-definition-facts"


def trigger_rows(definition: definition_pb2.ProcessDefinition, now: datetime) -> list[TriggerRow]:
    rows = []
    for position, trigger in enumerate(definition.spec.triggers):
        kind = trigger.WhichOneof("kind")
        common: dict[str, Any] = {
            "definition_id": definition.id,
            "position": position,
            "process_name": definition.name,
            "process_version": definition.version,
        }
        if kind == "schedule":
            timezone = trigger.schedule.timezone or "UTC"
            rows.append(
                TriggerRow(
                    **common,
                    kind=SCHEDULE,
                    cron=trigger.schedule.cron,
                    timezone=timezone,
                    input=struct_to_dict(trigger.schedule.input),
                    next_fire_at=next_fire_time(trigger.schedule.cron, timezone, now),
                )
            )
        elif kind == "event":
            rows.append(TriggerRow(**common, kind=EVENT, subject=trigger.event.subject))
    return rows


def message_routes_of(definition: definition_pb2.ProcessDefinition) -> list[MessageRoute]:
    """The wait_for_message steps of a published version that listen on a NATS subject."""
    return [
        MessageRoute(
            definition_id=definition.id,
            step_id=step.id,
            process_name=definition.name,
            subject=step.wait_for_message.subject,
            message_name=step.wait_for_message.message,
            key_field=step.wait_for_message.key_field or DEFAULT_KEY_FIELD,
        )
        for step in definition.spec.steps
        if step.WhichOneof("kind") == "wait_for_message" and step.wait_for_message.subject
    ]


class DefinitionFactsHandler:
    def __init__(self, uow: ExecutionSqlUnitOfWork) -> None:
        self._uow = uow

    async def __call__(self, envelope: Envelope, _msg: Msg) -> Outcome:
        try:
            fact = decode(envelope)
        except EnvelopeError:
            _log.warning("undecodable definition fact acknowledged", id=envelope.id)
            return Ack()
        await self._uow.write(lambda tx: self._apply(tx, envelope.id, fact))
        return Ack()

    async def _apply(self, tx: SqlExecutionTransaction, message_id: str, fact: object) -> None:
        conn = tx.conn
        if not await tx.claim_message(CONSUMER, message_id):
            return  # a redelivery: applied already
        if isinstance(fact, definition_facts.DefinitionPublished):
            rows = trigger_rows(fact.definition, datetime.now(UTC))
            await replace_triggers(conn, fact.definition.name, rows)
            await replace_routes(conn, fact.definition.id, message_routes_of(fact.definition))
        elif isinstance(fact, definition_facts.DefinitionArchived):
            await deactivate_definition(conn, fact.definition_id)
            await deactivate_routes(conn, fact.definition_id)


def definition_consumer(uow: ExecutionSqlUnitOfWork) -> ConsumerSpec:
    return ConsumerSpec(
        stream=facts_stream("definition"),
        durable=CONSUMER,
        filter_subjects=[
            fact_subject("definition", "DefinitionPublished"),
            fact_subject("definition", "DefinitionArchived"),
        ],
        handler=DefinitionFactsHandler(uow),
    )
