"""What the handlers need from the outside world, as abstract ports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from trinity_definition.domain.definition import DefinitionStatus, DefinitionVersion, Version
from trinity_platform.errors import FieldViolation
from trinity_process_model.model import ProcessSpec


@dataclass(frozen=True)
class ListCursor:
    """Keyset position after the last item of a page (in a signed page token, see trinity_platform.pagination)."""

    key: tuple[int, ...]


class DefinitionRepository(ABC):
    """The definitions of one transaction. ``save`` writes the aggregate's new events
    to the outbox in that same transaction."""

    @abstractmethod
    async def add(self, definition: DefinitionVersion) -> None: ...

    @abstractmethod
    async def get(self, definition_id: str) -> DefinitionVersion:
        """Raises DefinitionNotFound."""

    @abstractmethod
    async def save(self, definition: DefinitionVersion) -> None:
        """Raises ConcurrentModification when the stored revision moved since ``get``,
        or when another version of the name took the same version number."""

    @abstractmethod
    async def highest_version(self, name: str) -> Version | None:
        """The highest version ever assigned to ``name`` (published or archived)."""

    @abstractmethod
    async def by_version(self, name: str, version: Version) -> DefinitionVersion:
        """Raises DefinitionNotFound."""

    @abstractmethod
    async def latest_published(self, name: str) -> DefinitionVersion:
        """The highest published (not archived) version; raises DefinitionNotFound."""

    @abstractmethod
    async def list_page(
        self,
        status: DefinitionStatus | None,
        name: str,
        limit: int,
        after: ListCursor | None,
    ) -> list[tuple[DefinitionVersion, ListCursor]]:
        """Newest first (creation order), at most ``limit``, after ``after``."""

    @abstractmethod
    async def list_versions(
        self, name: str, limit: int, after: ListCursor | None
    ) -> list[tuple[DefinitionVersion, ListCursor]]:
        """Published and archived versions of ``name``, highest version first."""


Clock = Callable[[], datetime]
IdFactory = Callable[[], str]
Validator = Callable[[ProcessSpec], list[FieldViolation]]
Parser = Callable[[str], ProcessSpec]
"""Reads the authoring format (YAML or JSON); raises InvalidArgument."""


@dataclass(frozen=True)
class Environment:
    """The pure collaborators of the handlers, wired in ``bootstrap``."""

    clock: Clock
    new_id: IdFactory
    validate: Validator
    parse: Parser
