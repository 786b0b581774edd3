"""The definition service's transaction on the platform's unit of work: the
repository, and at the commit the facts of every definition it saved."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_definition.infrastructure.repository import SqlDefinitionRepository
from trinity_platform.sql_unit_of_work import SqlTransaction
from trinity_platform.unit_of_work import NewEvents


class SqlDefinitionTransaction(SqlTransaction):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn)
        self.definitions = SqlDefinitionRepository(conn)

    async def new_events(self) -> list[NewEvents]:
        return self.definitions.new_events()
