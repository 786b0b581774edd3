"""One database transaction around a command: aggregate rows, outbox rows, idempotency."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform import idempotency, metrics
from trinity_platform.db import read_only
from trinity_platform.errors import Aborted
from trinity_platform.outbox import OutboxSignal, add_many_to_outbox
from trinity_work.domain.events import WorkEvent
from trinity_work.domain.work import WorkRequest
from trinity_work.infrastructure.observed import observe_events
from trinity_work.infrastructure.outbox import outbox_messages
from trinity_work.infrastructure.repository import SqlWorkRepository


class SqlUnitOfWork:
    def __init__(
        self, engine: AsyncEngine, signal: OutboxSignal | None = None, *, read_only: bool = False
    ) -> None:
        self._engine = engine
        self._signal = signal
        self._read_only = read_only
        self._seen: dict[str, WorkRequest] = {}
        self._cm: AbstractAsyncContextManager[AsyncConnection] | None = None
        self.conn: AsyncConnection | None = None
        self.works: SqlWorkRepository

    async def __aenter__(self) -> SqlUnitOfWork:
        self._cm = read_only(self._engine) if self._read_only else self._engine.begin()
        self.conn = await self._cm.__aenter__()
        self.works = SqlWorkRepository(self.conn, self._seen)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._cm is not None and self.conn is not None
        cm, conn = self._cm, self.conn
        self._cm = self.conn = None
        wrote = 0
        committed: list[tuple[WorkRequest, list[WorkEvent]]] = []
        if exc_type is None and not self._read_only:
            try:
                for work in self._seen.values():
                    events, work.events = list(work.events), []
                    if events:
                        wrote += len(await add_many_to_outbox(conn, outbox_messages(work, events)))
                        committed.append((work, events))
            except BaseException as error:
                await cm.__aexit__(type(error), error, error.__traceback__)
                raise
        try:
            await cm.__aexit__(exc_type, exc, tb)  # commit, or roll back on an exception
        except IntegrityError as error:
            metrics.DB_CONFLICTS.labels("work").inc()
            raise Aborted("concurrent write; retry") from error
        for work, events in committed:
            observe_events(work, events)
        if exc_type is None and wrote and self._signal is not None:
            self._signal.notify()

    async def remembered(self, scope: str, key: str, fingerprint: str) -> str | None:
        assert self.conn is not None
        response = await idempotency.lookup(self.conn, scope, key, fingerprint)
        return None if response is None else response.decode()

    async def remember(self, scope: str, key: str, fingerprint: str, work_id: str) -> None:
        assert self.conn is not None
        try:
            await idempotency.remember(self.conn, scope, key, fingerprint, work_id.encode())
        except IntegrityError as exc:
            raise Aborted(f"idempotency key {key!r} was used concurrently") from exc
