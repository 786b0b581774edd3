"""One database transaction per command; facts and notifications written at commit.

``commit()`` turns the events of every approval the repository saw into outbox rows
(invariant 1: facts only after persistence — the relay publishes them after the
commit) and into notification dispatches for the work service, all in the same
transaction as the state change. After the commit it wakes the relay, the
notification sender and the deadline watcher.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_approval.contracts import event_to_fact
from trinity_approval.domain import ApprovalEvent, ApprovalRequested
from trinity_approval.infrastructure.notifications import NotificationPlanner
from trinity_approval.infrastructure.repository import SqlApprovalRepository
from trinity_platform import idempotency, metrics
from trinity_platform.db import read_only
from trinity_platform.db_errors import transient_database_error
from trinity_platform.errors import Aborted
from trinity_platform.outbox import OutboxMessage, add_many_to_outbox
from trinity_platform.subjects import fact_subject

SERVICE = "approval"
# Namespace of the deterministic fact ids (approval id, version, index).
FACT_ID_NAMESPACE = uuid.UUID("5b0c1d1e-6f0a-4c1e-9a57-6170726f7661")


def _raise_if_transient(exc: BaseException) -> None:
    """Database down, refusing connections, busy too long, or a lost race: retryable."""
    translated = transient_database_error(exc)
    if translated is not None:
        raise translated from exc


@dataclass(frozen=True)
class CommitSummary:
    facts: int
    dispatches: int
    new_approvals: int


class SqlIdempotencyStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def lookup(self, scope: str, key: str, fingerprint: str) -> str | None:
        found = await idempotency.lookup(self._conn, scope, key, fingerprint)
        return None if found is None else found.decode()

    async def remember(self, scope: str, key: str, fingerprint: str, approval_id: str) -> None:
        try:
            await idempotency.remember(self._conn, scope, key, fingerprint, approval_id.encode())
        except IntegrityError:
            # A concurrent first request with the same key won: retry, and answer with its result.
            raise Aborted(f"request {key!r} is being processed concurrently") from None


class SqlUnitOfWork:
    def __init__(
        self,
        engine: AsyncEngine,
        planner: NotificationPlanner,
        *,
        clock: Callable[[], datetime],
        readonly: bool = False,
        after_commit: Callable[[CommitSummary], None] | None = None,
    ) -> None:
        self._engine = engine
        self._planner = planner
        self._clock = clock
        self._readonly = readonly
        self._after_commit = after_commit
        self._conn: AsyncConnection | None = None
        self._stack: AsyncExitStack | None = None
        self._approvals: SqlApprovalRepository | None = None
        self._idempotency: SqlIdempotencyStore | None = None

    async def __aenter__(self) -> SqlUnitOfWork:
        stack = AsyncExitStack()
        try:
            if self._readonly:  # on SQLite: DEFERRED, outside the writers' gate
                conn = await stack.enter_async_context(read_only(self._engine))
            else:
                conn = await stack.enter_async_context(self._engine.connect())
            await conn.begin()
        except BaseException as exc:
            # Also on cancellation: a connection left open would keep SQLite's gate.
            await stack.aclose()
            _raise_if_transient(exc)
            raise
        self._stack = stack
        self._conn = conn
        self._approvals = SqlApprovalRepository(conn, self._clock)
        self._idempotency = SqlIdempotencyStore(conn)
        return self

    @property
    def approvals(self) -> SqlApprovalRepository:
        if self._approvals is None:
            raise RuntimeError("outside the unit of work")
        return self._approvals

    @property
    def idempotency(self) -> SqlIdempotencyStore:
        if self._idempotency is None:
            raise RuntimeError("outside the unit of work")
        return self._idempotency

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        stack, self._stack = self._stack, None
        try:
            if conn is not None and conn.in_transaction():
                await conn.rollback()
        finally:
            if stack is not None:
                await stack.aclose()
        if exc is not None:
            _raise_if_transient(exc)

    async def commit(self) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("commit outside the unit of work")
        facts: list[OutboxMessage] = []
        dispatches = 0
        new_approvals = 0
        for approval in self.approvals.seen.values():
            events, approval.events = approval.events, []
            if not events:
                continue
            facts.extend(self._facts(approval.id, approval.version, events))
            dispatches += await self._planner.plan(conn, approval, events, self._clock())
            new_approvals += sum(isinstance(e, ApprovalRequested) for e in events)
        try:
            await add_many_to_outbox(conn, facts)
            await conn.commit()
        except IntegrityError:
            metrics.DB_CONFLICTS.labels("approval").inc()
            raise Aborted("conflicting concurrent change; retry") from None
        if self._after_commit is not None and (facts or dispatches):
            self._after_commit(CommitSummary(len(facts), dispatches, new_approvals))

    @staticmethod
    def _facts(approval_id: str, version: int, events: list[ApprovalEvent]) -> list[OutboxMessage]:
        messages = []
        for index, event in enumerate(events):
            name, message = event_to_fact(event)
            messages.append(
                OutboxMessage(
                    message=message,
                    subject=fact_subject(SERVICE, name),
                    aggregate_id=approval_id,
                    correlation_id=event.execution_id,
                    message_id=str(
                        uuid.uuid5(FACT_ID_NAMESPACE, f"{approval_id}/{version}/{index}")
                    ),
                )
            )
        return messages
