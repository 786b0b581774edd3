"""DefinitionVersion: one version of a process definition, draft → published → archived.

A draft is edited under optimistic concurrency (``revision``); publishing validates
the whole spec and fixes the version number; a published version never changes
(invariant 6); archiving hides it from "latest" and new triggers, and keeps it
readable for the executions that run it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import total_ordering

from trinity_definition.domain.errors import (
    DefinitionInvalid,
    DefinitionNotDraft,
    DefinitionNotPublished,
    StaleRevision,
)
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_process_model.model import ProcessSpec


class DefinitionStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


class VersionBump(StrEnum):
    MINOR = "minor"
    MAJOR = "major"


_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$")


@total_ordering
@dataclass(frozen=True)
class Version:
    """``MAJOR.MINOR``, assigned by the service on publish (the first is 1.0)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str, field_name: str = "version") -> Version:
        match = _VERSION.match(text.strip())
        if match is None:
            raise InvalidArgument(
                f"version {text!r} is not MAJOR.MINOR",
                [FieldViolation(field_name, "must look like MAJOR.MINOR, e.g. 1.2")],
                reason="INVALID_VERSION",
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def following(cls, latest: Version | None, bump: VersionBump) -> Version:
        """The version a publish assigns after ``latest`` (any status, so never reused)."""
        if latest is None:
            return cls(1, 0)
        if bump is VersionBump.MAJOR:
            return cls(latest.major + 1, 0)
        return cls(latest.major, latest.minor + 1)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class DefinitionPublished:
    definition_id: str


@dataclass(frozen=True)
class DefinitionArchived:
    definition_id: str
    name: str
    version: Version
    occurred_at: datetime


DomainEvent = DefinitionPublished | DefinitionArchived


SpecLoader = Callable[[], ProcessSpec]


@dataclass(eq=False)
class DefinitionVersion:
    """Aggregate root. ``revision`` increases with every change (the concurrency token).

    The spec may be loaded lazily (``spec_loader``): reading or archiving a version
    never needs its steps, only validating does.
    """

    id: str
    name: str
    status: DefinitionStatus
    revision: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    version: Version | None = None
    published_at: datetime | None = None
    archived_at: datetime | None = None
    spec_loader: SpecLoader | None = field(default=None, repr=False)
    spec_changed: bool = False
    """The spec was replaced since the aggregate was loaded (storage rewrites it)."""
    events: list[DomainEvent] = field(default_factory=list)
    _spec: ProcessSpec | None = field(default=None, repr=False)

    @property
    def spec(self) -> ProcessSpec:
        if self._spec is None:
            if self.spec_loader is None:
                raise RuntimeError(f"definition {self.id} has no spec")
            self._spec = self.spec_loader()
        return self._spec

    @classmethod
    def create_draft(
        cls, definition_id: str, spec: ProcessSpec, created_by: str, now: datetime
    ) -> DefinitionVersion:
        check_has_name(spec)
        draft = cls(
            id=definition_id,
            name=spec.name,
            status=DefinitionStatus.DRAFT,
            revision=1,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            spec_changed=True,
        )
        draft._spec = spec
        return draft

    # ------------------------------------------------------------------ guards

    def check_is_draft(self) -> None:
        if self.status is not DefinitionStatus.DRAFT:
            raise DefinitionNotDraft(
                f"definition {self.id} is {self.status} (version {self.version}); "
                "a published version never changes: create a new draft",
                metadata={"definition_id": self.id, "status": self.status.value},
            )

    def check_is_published(self) -> None:
        if self.status is not DefinitionStatus.PUBLISHED:
            raise DefinitionNotPublished(
                f"definition {self.id} is {self.status}, not published",
                metadata={"definition_id": self.id, "status": self.status.value},
            )

    def check_revision(self, expected: int) -> None:
        if expected != self.revision:
            raise StaleRevision(
                f"definition {self.id} is at revision {self.revision}, not {expected}",
                metadata={"definition_id": self.id, "revision": str(self.revision)},
            )

    # ------------------------------------------------------------------ commands

    def update_draft(self, spec: ProcessSpec, expected_revision: int, now: datetime) -> None:
        self.check_is_draft()
        self.check_revision(expected_revision)
        check_has_name(spec)
        self._spec = spec
        self.name = spec.name
        self.spec_changed = True
        self._changed(now)

    def publish(
        self,
        version: Version,
        violations: list[FieldViolation],
        now: datetime,
        expected_revision: int = 0,
    ) -> None:
        """Publish as ``version``; ``violations`` are the validator's findings on the spec."""
        self.check_is_draft()
        if expected_revision:
            self.check_revision(expected_revision)
        if violations:
            raise DefinitionInvalid(
                f"definition {self.id} has {len(violations)} problem(s); nothing was published",
                violations,
            )
        self.status = DefinitionStatus.PUBLISHED
        self.version = version
        self.published_at = now
        self._changed(now)
        self.events.append(DefinitionPublished(self.id))

    def archive(self, now: datetime) -> None:
        self.check_is_published()
        assert self.version is not None
        self.status = DefinitionStatus.ARCHIVED
        self.archived_at = now
        self._changed(now)
        self.events.append(DefinitionArchived(self.id, self.name, self.version, now))

    def _changed(self, now: datetime) -> None:
        self.revision += 1
        self.updated_at = now


def check_has_name(spec: ProcessSpec) -> None:
    if not spec.name.strip():
        raise InvalidArgument(
            "a process definition needs a name",
            [FieldViolation("name", "is required")],
            reason="DEFINITION_NAME_MISSING",
        )
