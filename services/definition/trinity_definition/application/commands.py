"""Commands: one input object per mutating operation (they can grow without breaking callers)."""

from __future__ import annotations

from dataclasses import dataclass

from trinity_definition.domain.definition import VersionBump
from trinity_process_model.model import ProcessSpec

SpecSource = ProcessSpec | str
"""A spec as values, or as authoring text (YAML or JSON)."""


@dataclass(frozen=True)
class CreateDraft:
    source: SpecSource
    created_by: str = ""


@dataclass(frozen=True)
class UpdateDraft:
    definition_id: str
    expected_revision: int
    source: SpecSource


@dataclass(frozen=True)
class PublishDefinition:
    definition_id: str
    bump: VersionBump = VersionBump.MINOR
    expected_revision: int = 0


@dataclass(frozen=True)
class ArchiveDefinition:
    definition_id: str
