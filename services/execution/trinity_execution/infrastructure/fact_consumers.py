"""Durable consumers of the work and approval facts that continue executions.

Each fact is correlated to its execution and step, turned into an engine event
and applied with the inbox claim in the same transaction, so a redelivery is
harmless. Facts for unknown or finished executions are acknowledged and logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from google.protobuf.message import Message
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution import domain as d
from trinity_execution.application.continuation import Continuation
from trinity_execution.infrastructure import translate
from trinity_platform.consumer import Ack, Handler, Nak, Outcome
from trinity_platform.envelope import Envelope, EnvelopeError, decode
from trinity_platform.errors import Unavailable
from trinity_platform.inbox import claim_message
from trinity_platform.logs import get_logger
from trinity_platform.runtime import ConsumerSpec
from trinity_platform.subjects import fact_subject, facts_stream

_log = get_logger(__name__)

Translator = Callable[[Message, datetime], tuple[str, d.Event] | None]

WORK_CONSUMER = "execution-work-facts"
APPROVAL_CONSUMER = "execution-approval-facts"


def fact_handler(consumer: str, continuation: Continuation, to_event: Translator) -> Handler:
    async def handle(envelope: Envelope, _msg: Msg) -> Outcome:
        try:
            fact = decode(envelope)
        except EnvelopeError:
            _log.warning("undecodable fact acknowledged", type=envelope.type, id=envelope.id)
            return Ack()
        translated = to_event(fact, envelope.time)
        if translated is None:
            return Ack()
        execution_id, event = translated

        async def claim(conn: AsyncConnection) -> bool:
            return await claim_message(conn, consumer, envelope.id)

        try:
            await continuation.apply(
                execution_id, lambda now: _at(event, now), guard=claim, causation_id=envelope.id
            )
        except Unavailable as error:
            # The definition service is down: try again later, the fact is not lost.
            _log.warning("fact deferred", id=envelope.id, error=error.message)
            return Nak(delay=2.0)
        return Ack()

    return handle


def _at(event: d.Event, now: datetime) -> d.Event:
    """The event stamped with the decision time (the fact's own time may be skewed)."""
    return replace(event, now=now)


def consumer_specs(continuation: Continuation) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            stream=facts_stream("work"),
            durable=WORK_CONSUMER,
            filter_subjects=[
                fact_subject("work", "WorkCompleted"),
                fact_subject("work", "WorkFailed"),
            ],
            handler=fact_handler(WORK_CONSUMER, continuation, translate.work_fact_to_event),
            concurrency=32,
        ),
        ConsumerSpec(
            stream=facts_stream("approval"),
            durable=APPROVAL_CONSUMER,
            filter_subjects=[fact_subject("approval", "ApprovalDecided")],
            handler=fact_handler(APPROVAL_CONSUMER, continuation, translate.approval_fact_to_event),
            concurrency=8,
        ),
    ]
