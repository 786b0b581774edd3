"""The work service's transaction on the platform's unit of work: the repository,
and at the commit the events of every work request it added or saved as outbox rows
(facts to the work facts stream, intents to the work queue)."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_platform.sql_unit_of_work import SqlTransaction
from trinity_platform.subjects import fact_subject, work_queue_subject
from trinity_platform.unit_of_work import EventMessage, NewEvents
from trinity_work import codec as pb
from trinity_work.domain import events as ev
from trinity_work.domain.work import WorkRequest
from trinity_work.infrastructure.observed import observe_events
from trinity_work.infrastructure.repository import SqlWorkRepository

SERVICE = "work"


class SqlWorkTransaction(SqlTransaction):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn)
        self.works = SqlWorkRepository(conn)

    async def new_events(self) -> list[NewEvents]:
        changes = []
        for work in self.works.changed():
            events, work.events = list(work.events), []
            if events:
                changes.append(new_events(work, events))
                self.after_commit(partial(observe_events, work, events))
        return changes


def new_events(work: WorkRequest, events: list[ev.WorkEvent]) -> NewEvents:
    """The outbox messages of one work request's events."""
    correlation = work.correlation.execution_id
    messages = []
    for event in events:
        if isinstance(event, ev.ExecutionRequested):
            messages.append(
                EventMessage(
                    message=pb.execution_requested(work, event.delivery, event.at),
                    subject=work_queue_subject(work.kind.value),
                    correlation_id=correlation,
                )
            )
            continue
        if isinstance(event, ev.WorkRequested):
            fact = pb.work_requested(work, event.at)
        elif isinstance(event, ev.WorkStarted):
            fact = pb.work_started(work, event.executor_id, event.delivery, event.at)  # type: ignore[assignment]
        elif isinstance(event, ev.WorkCompleted):
            fact = pb.work_completed(work, event.result, event.at)  # type: ignore[assignment]
        elif isinstance(event, ev.WorkFailed):
            fact = pb.work_failed(work, event.failure, event.at)  # type: ignore[assignment]
        else:
            fact = pb.work_cancelled(work, event.reason, event.at)  # type: ignore[assignment]
        messages.append(
            EventMessage(
                message=fact,
                subject=fact_subject(SERVICE, type(fact).__name__),
                correlation_id=correlation,
            )
        )
    return NewEvents(SERVICE, work.id, work.version, messages)
