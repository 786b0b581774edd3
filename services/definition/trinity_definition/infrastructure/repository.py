"""The DefinitionRepository on SQLAlchemy Core, inside the caller's transaction.

``save`` is a conditional UPDATE on the revision the aggregate was loaded with
(optimistic concurrency); the aggregate's new facts go to the outbox at the commit
of the same transaction (invariant 1, :meth:`SqlDefinitionRepository.new_events`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity.process.definition.v1 import definition_pb2, facts_pb2
from trinity_definition.application.ports import DefinitionRepository, ListCursor
from trinity_definition.codec import definition_message, spec_message, spec_of, timestamp
from trinity_definition.domain.definition import (
    DefinitionArchived,
    DefinitionPublished,
    DefinitionStatus,
    DefinitionVersion,
    DomainEvent,
    Version,
)
from trinity_definition.domain.errors import ConcurrentModification, DefinitionNotFound
from trinity_definition.infrastructure.tables import definitions as t
from trinity_platform.subjects import fact_subject
from trinity_platform.unit_of_work import EventMessage, NewEvents

SERVICE = "definition"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class SqlDefinitionRepository(DefinitionRepository):
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._loaded_revision: dict[str, int] = {}
        self._encoded: dict[str, Callable[[], definition_pb2.ProcessSpec]] = {}
        self._changed: dict[str, DefinitionVersion] = {}

    # ------------------------------------------------------------------ mapping

    def _from_row(self, row: Row[Any]) -> DefinitionVersion:
        encoded: bytes = row.spec
        message: definition_pb2.ProcessSpec | None = None

        def spec_message() -> definition_pb2.ProcessSpec:
            nonlocal message
            if message is None:
                message = definition_pb2.ProcessSpec.FromString(encoded)
            return message

        version = Version(row.major, row.minor) if row.major is not None else None
        definition = DefinitionVersion(
            id=row.id,
            name=row.name,
            status=DefinitionStatus(row.status),
            revision=row.revision,
            created_by=row.created_by,
            created_at=_utc(row.created_at),  # type: ignore[arg-type]
            updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
            version=version,
            published_at=_utc(row.published_at),
            archived_at=_utc(row.archived_at),
            spec_loader=lambda: spec_of(spec_message()),
        )
        self._loaded_revision[definition.id] = definition.revision
        self._encoded[definition.id] = spec_message
        return definition

    def spec_message_of(self, definition: DefinitionVersion) -> definition_pb2.ProcessSpec:
        """The encoded spec: the stored one while unchanged (no decode, no re-encode)."""
        if not definition.spec_changed:
            stored = self._encoded.get(definition.id)
            if stored is not None:
                return stored()
        message = spec_message(definition.spec)
        self._encoded[definition.id] = lambda: message
        return message

    def _values(self, definition: DefinitionVersion) -> dict[str, Any]:
        return {
            "name": definition.name,
            "status": definition.status.value,
            "revision": definition.revision,
            "major": definition.version.major if definition.version else None,
            "minor": definition.version.minor if definition.version else None,
            "updated_at": definition.updated_at,
            "published_at": definition.published_at,
            "archived_at": definition.archived_at,
        }

    # ------------------------------------------------------------------ commands

    async def add(self, definition: DefinitionVersion) -> None:
        spec = self.spec_message_of(definition)
        await self._conn.execute(
            insert(t).values(
                id=definition.id,
                spec=spec.SerializeToString(deterministic=True),
                created_by=definition.created_by,
                created_at=definition.created_at,
                **self._values(definition),
            )
        )
        definition.spec_changed = False
        self._loaded_revision[definition.id] = definition.revision
        self._changed[definition.id] = definition

    async def get(self, definition_id: str) -> DefinitionVersion:
        row = (await self._conn.execute(select(t).where(t.c.id == definition_id))).first()
        if row is None:
            raise DefinitionNotFound(
                f"definition {definition_id!r} not found", metadata={"definition_id": definition_id}
            )
        return self._from_row(row)

    async def save(self, definition: DefinitionVersion) -> None:
        loaded = self._loaded_revision.get(definition.id)
        if loaded is None:
            raise ValueError(f"definition {definition.id} was not loaded by this repository")
        values = self._values(definition)
        if definition.spec_changed:
            values["spec"] = self.spec_message_of(definition).SerializeToString(deterministic=True)
        try:
            result = await self._conn.execute(
                update(t).where(t.c.id == definition.id, t.c.revision == loaded).values(**values)
            )
        except IntegrityError:
            raise ConcurrentModification(
                f"version {definition.version} of {definition.name!r} was taken concurrently",
                metadata={"definition_id": definition.id},
            ) from None
        if result.rowcount != 1:
            raise ConcurrentModification(
                f"definition {definition.id} was changed concurrently",
                metadata={"definition_id": definition.id},
            )
        definition.spec_changed = False
        self._loaded_revision[definition.id] = definition.revision
        self._changed[definition.id] = definition

    def new_events(self) -> list[NewEvents]:
        """The facts of every definition this transaction saved (taken from them)."""
        changes = []
        for definition in self._changed.values():
            events, definition.events = definition.events, []
            if events:
                facts = [self._fact(definition, event) for event in events]
                changes.append(NewEvents(SERVICE, definition.id, definition.revision, facts))
        self._changed = {}
        return changes

    def _fact(self, definition: DefinitionVersion, event: DomainEvent) -> EventMessage:
        if isinstance(event, DefinitionPublished):
            message: Any = facts_pb2.DefinitionPublished(
                definition=definition_message(definition, self.spec_message_of(definition)),
                occur_time=timestamp(definition.published_at),
            )
            name = "DefinitionPublished"
        else:
            assert isinstance(event, DefinitionArchived)
            message = facts_pb2.DefinitionArchived(
                definition_id=event.definition_id,
                name=event.name,
                version=str(event.version),
                occur_time=timestamp(event.occurred_at),
            )
            name = "DefinitionArchived"
        return EventMessage(message, fact_subject(SERVICE, name))

    # ------------------------------------------------------------------ queries

    async def highest_version(self, name: str) -> Version | None:
        row = (
            await self._conn.execute(
                select(t.c.major, t.c.minor)
                .where(t.c.name == name, t.c.major.is_not(None))
                .order_by(t.c.major.desc(), t.c.minor.desc())
                .limit(1)
            )
        ).first()
        return Version(row.major, row.minor) if row is not None else None

    async def by_version(self, name: str, version: Version) -> DefinitionVersion:
        row = (
            await self._conn.execute(
                select(t).where(
                    t.c.name == name, t.c.major == version.major, t.c.minor == version.minor
                )
            )
        ).first()
        if row is None:
            raise DefinitionNotFound(
                f"process {name!r} has no version {version}",
                metadata={"name": name, "version": str(version)},
            )
        return self._from_row(row)

    async def latest_published(self, name: str) -> DefinitionVersion:
        row = (
            await self._conn.execute(
                select(t)
                .where(t.c.name == name, t.c.status == DefinitionStatus.PUBLISHED.value)
                .order_by(t.c.major.desc(), t.c.minor.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            raise DefinitionNotFound(
                f"no published process named {name!r}", metadata={"name": name}
            )
        return self._from_row(row)

    async def list_page(
        self,
        status: DefinitionStatus | None,
        name: str,
        limit: int,
        after: ListCursor | None,
    ) -> list[tuple[DefinitionVersion, ListCursor]]:
        query = select(t).order_by(t.c.seq.desc()).limit(limit)
        if status is not None:
            query = query.where(t.c.status == status.value)
        if name:
            query = query.where(t.c.name == name)
        if after is not None:
            query = query.where(t.c.seq < after.key[0])
        rows = (await self._conn.execute(query)).all()
        return [(self._from_row(row), ListCursor((row.seq,))) for row in rows]

    async def list_versions(
        self, name: str, limit: int, after: ListCursor | None
    ) -> list[tuple[DefinitionVersion, ListCursor]]:
        query = (
            select(t)
            .where(t.c.name == name, t.c.major.is_not(None))
            .order_by(t.c.major.desc(), t.c.minor.desc())
            .limit(limit)
        )
        if after is not None:
            major, minor = after.key
            query = query.where(or_(t.c.major < major, and_(t.c.major == major, t.c.minor < minor)))
        rows = (await self._conn.execute(query)).all()
        return [(self._from_row(row), ListCursor((row.major, row.minor))) for row in rows]
