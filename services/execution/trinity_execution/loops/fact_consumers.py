"""Durable consumers of the work and approval facts that continue executions.

A fetched batch at a time: each fact is correlated to its execution and step, matched
to the request this service made (:mod:`.fact_matching`: the owner's ``ce-source``, the
work or approval id of that step's request), turned into an engine event and applied
with its inbox claim in the same transaction, so a redelivery is harmless. The batch
is read in one go and written in one transaction, the facts of one execution in stream
order (``Continuation.apply_batch``); an execution that changed meanwhile is decided
again alone. Facts for unknown or finished executions, and facts that answer no
request of ours, are acknowledged and logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from google.protobuf.message import Message

from trinity.process.approval.v1 import facts_pb2 as approval_facts
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_execution import domain as d
from trinity_execution.application.continuation import Applied, Continuation, Continued
from trinity_execution.application.ports import ExecutionRow, ExecutionTransaction
from trinity_execution.infrastructure import translate
from trinity_execution.infrastructure.fact_matching import Claim, Unmatched, load_answered
from trinity_execution.infrastructure.senders import REQUEST_APPROVAL, REQUEST_WORK
from trinity_execution.infrastructure.transactions import SqlExecutionTransaction
from trinity_platform.consumer import Ack, BatchHandler, Delivery, Failed, Nak, Outcome
from trinity_platform.envelope import EnvelopeError, decode
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


@dataclass(frozen=True)
class _Fact:
    """A fact of the batch that says which request of ours it answers."""

    index: int  # in the batch
    delivery: Delivery
    event: Answered
    answer: Claim


def fact_handler(
    consumer: str,
    continuation: Continuation,
    to_event: Translator,
    owner: str,
) -> BatchHandler:
    """Continues executions with the facts of service ``owner`` that answer our requests,
    a fetched batch at a time (one read, one write transaction)."""
    source = event_source(owner)

    def answering(index: int, delivery: Delivery) -> _Fact | None:
        envelope = delivery.envelope
        if envelope.source != source:
            _log.warning(
                "fact from a foreign source dropped",
                id=envelope.id,
                type=envelope.type,
                source=envelope.source,
                expected=source,
            )
            return None
        try:
            fact = decode(envelope)
        except EnvelopeError:
            _log.warning("undecodable fact acknowledged", type=envelope.type, id=envelope.id)
            return None
        translated = to_event(fact, envelope.time)
        if translated is None:
            return None
        execution_id, event = translated
        assert isinstance(event, d.WorkCompleted | d.WorkFailed | d.ApprovalDecided)
        return _Fact(index, delivery, event, _answer(execution_id, fact, event))

    async def handle(deliveries: Sequence[Delivery]) -> list[Outcome]:
        outcomes: list[Outcome] = [Ack() for _ in deliveries]
        facts = [
            fact
            for index, delivery in enumerate(deliveries)
            if (fact := answering(index, delivery)) is not None
        ]
        if not facts:
            return outcomes
        matched: list[str | Unmatched] = []

        async def load(tx: ExecutionTransaction) -> list[ExecutionRow | None]:
            # The executions and the requests the facts answer: one read for the batch.
            assert isinstance(tx, SqlExecutionTransaction)
            rows, found = await load_answered(tx.conn, [fact.answer for fact in facts])
            matched[:] = found
            return rows

        def continued(at: int, fact: _Fact) -> Continued:
            message_id = fact.delivery.envelope.id

            async def claim(tx: ExecutionTransaction) -> bool:
                return await tx.claim_message(consumer, message_id)

            def event_for(now: datetime) -> d.Event:
                request = matched[at]
                assert isinstance(request, str)
                return replace(fact.event, request=request, now=now)  # the decision's time

            return Continued(
                fact.answer.execution_id,
                event_for,
                guard=claim,
                causation_id=message_id,
                traced=fact.delivery.span,
            )

        try:
            applied = await continuation.apply_batch(
                [continued(at, fact) for at, fact in enumerate(facts)], load
            )
        except Unavailable as error:  # the database: every fact waits
            _log.warning("facts deferred", count=len(facts), error=error.message)
            for fact in facts:
                outcomes[fact.index] = Nak(delay=2.0)
            return outcomes
        for fact, result, match in zip(facts, applied, matched, strict=True):
            outcomes[fact.index] = _outcome(fact, result, match)
        return outcomes

    return handle


def _outcome(fact: _Fact, applied: Applied, matched: str | Unmatched) -> Outcome:
    envelope = fact.delivery.envelope
    if isinstance(applied, Unavailable):
        # The definition service (or the database) is down: try again later, the fact
        # is not lost.
        _log.warning("fact deferred", id=envelope.id, error=applied.message)
        return Nak(delay=2.0)
    if isinstance(applied, Exception):
        return Failed(applied)
    if matched is Unmatched.NOT_YET:
        return Nak(delay=0.2)  # the dispatcher is recording the request's answer
    if matched is Unmatched.NONE:
        _log.warning(
            "fact answers no request of this execution; dropped",
            id=envelope.id,
            type=envelope.type,
            execution_id=fact.answer.execution_id,
            step_id=fact.answer.step_id,
            answer_id=fact.answer.answer_id,
        )
    return Ack()


def consumer_specs(continuation: Continuation) -> list[ConsumerSpec]:
    return [
        ConsumerSpec(
            stream=facts_stream("work"),
            durable=WORK_CONSUMER,
            filter_subjects=[
                fact_subject("work", "WorkCompleted"),
                fact_subject("work", "WorkFailed"),
            ],
            batch_handler=fact_handler(
                WORK_CONSUMER, continuation, translate.work_fact_to_event, "work"
            ),
        ),
        ConsumerSpec(
            stream=facts_stream("approval"),
            durable=APPROVAL_CONSUMER,
            filter_subjects=[fact_subject("approval", "ApprovalDecided")],
            batch_handler=fact_handler(
                APPROVAL_CONSUMER,
                continuation,
                translate.approval_fact_to_event,
                "approval",
            ),
        ),
    ]
