"""Durable consumers of the work and approval facts that continue executions.

Each fact is correlated to its execution and step, matched to the request this
service made (:mod:`.fact_matching`: the owner's ``ce-source``, the work or approval
id of that step's request), turned into an engine event and applied with the inbox
claim in the same transaction, so a redelivery is harmless. Facts for unknown or
finished executions, and facts that answer no request of ours, are acknowledged
and logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from google.protobuf.message import Message
from nats.aio.msg import Msg

from trinity.process.approval.v1 import facts_pb2 as approval_facts
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_execution import domain as d
from trinity_execution.application.continuation import Continuation
from trinity_execution.application.ports import ExecutionRow, ExecutionTransaction
from trinity_execution.infrastructure import translate
from trinity_execution.infrastructure.fact_matching import Claim, Unmatched, load_answered
from trinity_execution.infrastructure.senders import REQUEST_APPROVAL, REQUEST_WORK
from trinity_execution.infrastructure.transactions import SqlExecutionTransaction
from trinity_platform.consumer import Ack, Handler, Nak, Outcome
from trinity_platform.envelope import Envelope, EnvelopeError, decode
from trinity_platform.errors import Unavailable
from trinity_platform.logs import get_logger
from trinity_platform.runtime import ConsumerSpec
from trinity_platform.subjects import event_source, fact_subject, facts_stream

_log = get_logger(__name__)

Translator = Callable[[Message, datetime], tuple[str, d.Event] | None]
Answered = d.WorkCompleted | d.WorkFailed | d.ApprovalDecided

WORK_CONSUMER = "execution-work-facts"
APPROVAL_CONSUMER = "execution-approval-facts"


def _answer(execution_id: str, fact: Message, event: Answered) -> Claim:
    if isinstance(fact, work_facts.WorkCompleted | work_facts.WorkFailed):
        kind, answer_id = REQUEST_WORK, fact.work_id
    else:
        assert isinstance(fact, approval_facts.ApprovalDecided)
        kind, answer_id = REQUEST_APPROVAL, fact.approval_id
    return Claim(
        execution_id=execution_id,
        kind=kind,
        answer_id=answer_id,
        step_id=event.step_id,
        iteration=event.iteration,
        attempt=None if isinstance(event, d.ApprovalDecided) else event.attempt,
    )


def fact_handler(
    consumer: str,
    continuation: Continuation,
    to_event: Translator,
    owner: str,
) -> Handler:
    """Continues executions with the facts of service ``owner`` that answer our requests."""
    source = event_source(owner)

    async def handle(envelope: Envelope, _msg: Msg) -> Outcome:
        if envelope.source != source:
            _log.warning(
                "fact from a foreign source dropped",
                id=envelope.id,
                type=envelope.type,
                source=envelope.source,
                expected=source,
            )
            return Ack()
        try:
            fact = decode(envelope)
        except EnvelopeError:
            _log.warning("undecodable fact acknowledged", type=envelope.type, id=envelope.id)
            return Ack()
        translated = to_event(fact, envelope.time)
        if translated is None:
            return Ack()
        execution_id, event = translated
        assert isinstance(event, d.WorkCompleted | d.WorkFailed | d.ApprovalDecided)
        answer = _answer(execution_id, fact, event)
        matched: str | Unmatched = Unmatched.NONE

        async def load(tx: ExecutionTransaction) -> ExecutionRow | None:
            # The execution and the request the fact answers: one read per fact.
            nonlocal matched
            assert isinstance(tx, SqlExecutionTransaction)
            row, matched = await load_answered(tx.conn, answer)
            return row

        async def claim(tx: ExecutionTransaction) -> bool:
            return await tx.claim_message(consumer, envelope.id)

        def event_for(now: datetime) -> d.Event:
            assert isinstance(matched, str)
            return replace(event, request=matched, now=now)  # the decision's time, not the fact's

        try:
            await continuation.apply(
                execution_id, event_for, guard=claim, causation_id=envelope.id, first_load=load
            )
        except Unavailable as error:
            # The definition service is down: try again later, the fact is not lost.
            _log.warning("fact deferred", id=envelope.id, error=error.message)
            return Nak(delay=2.0)
        if matched is Unmatched.NOT_YET:
            return Nak(delay=0.2)  # the dispatcher is recording the request's answer
        if matched is Unmatched.NONE:
            _log.warning(
                "fact answers no request of this execution; dropped",
                id=envelope.id,
                type=envelope.type,
                execution_id=execution_id,
                step_id=answer.step_id,
                answer_id=answer.answer_id,
            )
        return Ack()

    return handle


def consumer_specs(continuation: Continuation) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            stream=facts_stream("work"),
            durable=WORK_CONSUMER,
            filter_subjects=[
                fact_subject("work", "WorkCompleted"),
                fact_subject("work", "WorkFailed"),
            ],
            handler=fact_handler(WORK_CONSUMER, continuation, translate.work_fact_to_event, "work"),
            concurrency=32,
        ),
        ConsumerSpec(
            stream=facts_stream("approval"),
            durable=APPROVAL_CONSUMER,
            filter_subjects=[fact_subject("approval", "ApprovalDecided")],
            handler=fact_handler(
                APPROVAL_CONSUMER,
                continuation,
                translate.approval_fact_to_event,
                "approval",
            ),
            concurrency=8,
        ),
    ]
