"""The work service's transaction on the platform's unit of work: the repository,
and at the commit the events of every work request it added or saved as outbox rows."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_platform.sql_unit_of_work import SqlTransaction
from trinity_platform.unit_of_work import NewEvents
from trinity_work.infrastructure.observed import observe_events
from trinity_work.infrastructure.outbox import new_events
from trinity_work.infrastructure.repository import SqlWorkRepository


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
