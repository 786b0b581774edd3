"""The aggregate, versions and page tokens as pure code (no database, broker or gRPC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from trinity_definition.domain.definition import (
    DefinitionArchived,
    DefinitionPublished,
    DefinitionStatus,
    DefinitionVersion,
    Version,
    VersionBump,
)
from trinity_definition.domain.errors import (
    DefinitionInvalid,
    DefinitionNotDraft,
    DefinitionNotPublished,
    StaleRevision,
)
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def spec(name: str = "p") -> ProcessSpec:
    return ProcessSpec(name=name, steps=(Step("a", AgentTaskConfig("agent", "hello")),))


def draft() -> DefinitionVersion:
    return DefinitionVersion.create_draft("id-1", spec(), "ann", T0)


def test_versions_parse_order_and_follow() -> None:
    assert Version.parse("1.2") == Version(1, 2)
    assert Version(1, 10) > Version(1, 9) > Version(0, 99)
    assert str(Version(3, 0)) == "3.0"
    assert Version.following(None, VersionBump.MAJOR) == Version(1, 0)
    assert Version.following(Version(1, 2), VersionBump.MINOR) == Version(1, 3)
    assert Version.following(Version(1, 2), VersionBump.MAJOR) == Version(2, 0)
    for bad in ("1", "1.2.3", "v1.0", "01.0", "", "1.-1"):
        with pytest.raises(InvalidArgument) as caught:
            Version.parse(bad)
        assert caught.value.reason == "INVALID_VERSION"


def test_draft_edits_bump_the_revision_and_refuse_stale_ones() -> None:
    definition = draft()
    assert (definition.status, definition.revision, definition.events) == (
        DefinitionStatus.DRAFT,
        1,
        [],
    )
    definition.update_draft(spec("q"), 1, T0 + timedelta(seconds=1))
    assert (definition.name, definition.revision) == ("q", 2)
    assert definition.updated_at == T0 + timedelta(seconds=1)
    with pytest.raises(StaleRevision):
        definition.update_draft(spec(), 1, T0)
    with pytest.raises(InvalidArgument) as caught:
        definition.update_draft(spec(""), 2, T0)
    assert caught.value.violations == [FieldViolation("name", "is required")]


def test_publish_validates_and_freezes() -> None:
    definition = draft()
    problems = [FieldViolation("steps[0].id", "bad"), FieldViolation("name", "bad")]
    with pytest.raises(DefinitionInvalid) as caught:
        definition.publish(Version(1, 0), problems, T0)
    assert caught.value.violations == problems and caught.value.reason == "DEFINITION_INVALID"
    assert definition.status is DefinitionStatus.DRAFT and definition.events == []

    with pytest.raises(StaleRevision):
        definition.publish(Version(1, 0), [], T0, expected_revision=7)
    definition.publish(Version(1, 0), [], T0, expected_revision=1)
    assert (definition.status, definition.version, definition.revision) == (
        DefinitionStatus.PUBLISHED,
        Version(1, 0),
        2,
    )
    assert definition.events == [DefinitionPublished("id-1")]
    with pytest.raises(DefinitionNotDraft):
        definition.update_draft(spec(), 2, T0)
    with pytest.raises(DefinitionNotDraft):
        definition.publish(Version(1, 1), [], T0)


def test_only_published_versions_archive() -> None:
    definition = draft()
    with pytest.raises(DefinitionNotPublished):
        definition.archive(T0)
    definition.publish(Version(2, 3), [], T0)
    definition.events.clear()
    definition.archive(T0)
    assert definition.status is DefinitionStatus.ARCHIVED and definition.archived_at == T0
    assert definition.events == [DefinitionArchived("id-1", "p", Version(2, 3), T0)]
    with pytest.raises(DefinitionNotPublished):
        definition.archive(T0)
