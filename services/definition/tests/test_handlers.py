"""The application handlers against an in-memory fake of the repository port (no I/O)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from trinity_definition.application import queries
from trinity_definition.application.commands import (
    ArchiveDefinition,
    CreateDraft,
    PublishDefinition,
    UpdateDraft,
)
from trinity_definition.application.handlers import (
    archive_definition,
    create_draft,
    publish_definition,
    update_draft,
)
from trinity_definition.application.ports import DefinitionRepository, Environment, ListCursor
from trinity_definition.domain.definition import (
    DefinitionPublished,
    DefinitionStatus,
    DefinitionVersion,
    Version,
    VersionBump,
)
from trinity_definition.domain.errors import DefinitionInvalid, DefinitionNotFound
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, Step


class FakeRepository(DefinitionRepository):
    def __init__(self) -> None:
        self.rows: dict[str, DefinitionVersion] = {}
        self.saved_events: list[object] = []

    async def add(self, definition: DefinitionVersion) -> None:
        self.rows[definition.id] = definition
        self.saved_events += definition.events
        definition.events = []

    async def get(self, definition_id: str) -> DefinitionVersion:
        try:
            return self.rows[definition_id]
        except KeyError:
            raise DefinitionNotFound(definition_id) from None

    async def save(self, definition: DefinitionVersion) -> None:
        await self.add(definition)

    def _versions(self, name: str) -> list[DefinitionVersion]:
        found = [d for d in self.rows.values() if d.name == name and d.version is not None]
        return sorted(found, key=lambda d: d.version or Version(0, 0), reverse=True)

    async def highest_version(self, name: str) -> Version | None:
        versions = self._versions(name)
        return versions[0].version if versions else None

    async def by_version(self, name: str, version: Version) -> DefinitionVersion:
        for definition in self._versions(name):
            if definition.version == version:
                return definition
        raise DefinitionNotFound(name)

    async def latest_published(self, name: str) -> DefinitionVersion:
        for definition in self._versions(name):
            if definition.status is DefinitionStatus.PUBLISHED:
                return definition
        raise DefinitionNotFound(name)

    async def list_page(
        self, status: DefinitionStatus | None, name: str, limit: int, after: ListCursor | None
    ) -> list[tuple[DefinitionVersion, ListCursor]]:
        rows = [
            (d, ListCursor((i,)))
            for i, d in enumerate(self.rows.values())
            if (status is None or d.status is status) and (not name or d.name == name)
        ]
        rows.reverse()
        if after is not None:
            rows = [r for r in rows if r[1].key[0] < after.key[0]]
        return rows[:limit]

    async def list_versions(
        self, name: str, limit: int, after: ListCursor | None
    ) -> list[tuple[DefinitionVersion, ListCursor]]:
        raise NotImplementedError


def spec(name: str = "p", *, broken: bool = False) -> ProcessSpec:
    depends = ("ghost",) if broken else ()
    return ProcessSpec(name=name, steps=(Step("a", AgentTaskConfig("x", "y"), depends_on=depends),))


def fake_validate(candidate: ProcessSpec) -> list[FieldViolation]:
    return [
        FieldViolation(f"steps[{i}].depends_on[{j}]", "unknown step")
        for i, step in enumerate(candidate.steps)
        for j, ref in enumerate(step.depends_on)
        if ref == "ghost"
    ]


def fake_parse(text: str) -> ProcessSpec:
    if not text.startswith("name: "):
        raise InvalidArgument("unreadable", [FieldViolation("", "not a process")])
    return spec(text.removeprefix("name: ").strip())


@pytest.fixture
def env() -> Environment:
    ids = itertools.count(1)
    return Environment(
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        new_id=lambda: f"id-{next(ids)}",
        validate=fake_validate,
        parse=fake_parse,
    )


async def test_versions_follow_per_name(env: Environment) -> None:
    repo = FakeRepository()
    versions = []
    for bump in (VersionBump.MINOR, VersionBump.MINOR, VersionBump.MAJOR, VersionBump.MINOR):
        draft = await create_draft(CreateDraft(spec()), repo, env)
        published = await publish_definition(PublishDefinition(draft.id, bump), repo, env)
        versions.append(str(published.version))
    other = await create_draft(CreateDraft(spec("q")), repo, env)
    first_q = await publish_definition(PublishDefinition(other.id, VersionBump.MAJOR), repo, env)
    assert versions == ["1.0", "1.1", "2.0", "2.1"] and str(first_q.version) == "1.0"
    assert repo.saved_events == [DefinitionPublished(f"id-{i}") for i in range(1, 6)]
    latest = await queries.get_by_name("p", "", repo)
    assert str(latest.version) == "2.1"
    await archive_definition(ArchiveDefinition(latest.id), repo, env)
    assert str((await queries.get_by_name("p", "", repo)).version) == "2.0"
    assert (await queries.get_by_name("p", "2.1", repo)).status is DefinitionStatus.ARCHIVED


async def test_invalid_drafts_stay_drafts(env: Environment) -> None:
    repo = FakeRepository()
    draft = await create_draft(CreateDraft(spec(broken=True)), repo, env)
    assert await queries.validate(None, draft.id, repo, env) == fake_validate(draft.spec)
    with pytest.raises(DefinitionInvalid) as caught:
        await publish_definition(PublishDefinition(draft.id), repo, env)
    assert caught.value.violations == [FieldViolation("steps[0].depends_on[0]", "unknown step")]
    assert repo.rows[draft.id].status is DefinitionStatus.DRAFT and repo.saved_events == []
    fixed = await update_draft(UpdateDraft(draft.id, 1, "name: p"), repo, env)
    assert fixed.revision == 2 and fake_validate(fixed.spec) == []
    assert (await publish_definition(PublishDefinition(draft.id), repo, env)).status is (
        DefinitionStatus.PUBLISHED
    )


async def test_text_sources_are_parsed(env: Environment) -> None:
    repo = FakeRepository()
    draft = await create_draft(CreateDraft("name: from-text", "bob"), repo, env)
    assert (draft.name, draft.created_by) == ("from-text", "bob")
    with pytest.raises(InvalidArgument):
        await create_draft(CreateDraft("garbage"), repo, env)
    with pytest.raises(InvalidArgument):
        await update_draft(UpdateDraft(draft.id, 0, "name: x"), repo, env)
    with pytest.raises(InvalidArgument):
        await publish_definition(PublishDefinition(" "), repo, env)


async def test_list_pages_through_the_port(env: Environment) -> None:
    repo = FakeRepository()
    for i in range(5):
        await create_draft(CreateDraft(replace(spec(), name=f"n{i % 2}")), repo, env)
    page = await queries.list_definitions(None, "", 2, "", repo)
    ids = [d.id for d in page.definitions]
    while page.next_page_token:
        page = await queries.list_definitions(None, "", 2, page.next_page_token, repo)
        ids += [d.id for d in page.definitions]
    assert ids == [f"id-{i}" for i in range(5, 0, -1)]
    named = await queries.list_definitions(None, "n1", 10, "", repo)
    assert [d.id for d in named.definitions] == ["id-4", "id-2"] and named.next_page_token == ""
