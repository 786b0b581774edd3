"""Command handlers: plain functions ``(command, repository, environment)``.

The caller owns the transaction (and the idempotency key); a handler loads,
calls the aggregate, and saves. Saving writes the aggregate's facts to the outbox.
"""

from __future__ import annotations

from trinity_definition.application.commands import (
    ArchiveDefinition,
    CreateDraft,
    PublishDefinition,
    SpecSource,
    UpdateDraft,
)
from trinity_definition.application.ports import DefinitionRepository, Environment
from trinity_definition.domain.definition import DefinitionVersion, Version
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_process_model.model import ProcessSpec


def read_source(source: SpecSource, env: Environment) -> ProcessSpec:
    """The spec of a command: as given, or parsed from authoring text."""
    if isinstance(source, str):
        return env.parse(source)
    return source


def require_id(definition_id: str, field: str = "definition_id") -> None:
    if not definition_id.strip():
        raise InvalidArgument(f"{field} is required", [FieldViolation(field, "is required")])


async def create_draft(
    command: CreateDraft, repo: DefinitionRepository, env: Environment
) -> DefinitionVersion:
    spec = read_source(command.source, env)
    draft = DefinitionVersion.create_draft(env.new_id(), spec, command.created_by, env.clock())
    await repo.add(draft)
    return draft


async def update_draft(
    command: UpdateDraft, repo: DefinitionRepository, env: Environment
) -> DefinitionVersion:
    require_id(command.definition_id)
    if command.expected_revision <= 0:
        raise InvalidArgument(
            "expected_revision is required to update a draft",
            [FieldViolation("expected_revision", "pass the revision you last read (>= 1)")],
        )
    spec = read_source(command.source, env)
    draft = await repo.get(command.definition_id)
    draft.update_draft(spec, command.expected_revision, env.clock())
    await repo.save(draft)
    return draft


async def publish_definition(
    command: PublishDefinition, repo: DefinitionRepository, env: Environment
) -> DefinitionVersion:
    require_id(command.definition_id)
    draft = await repo.get(command.definition_id)
    draft.check_is_draft()
    if command.expected_revision:
        draft.check_revision(command.expected_revision)
    violations = env.validate(draft.spec)
    version = Version.following(await repo.highest_version(draft.name), command.bump)
    draft.publish(version, violations, env.clock(), command.expected_revision)
    await repo.save(draft)
    return draft


async def archive_definition(
    command: ArchiveDefinition, repo: DefinitionRepository, env: Environment
) -> DefinitionVersion:
    require_id(command.definition_id)
    definition = await repo.get(command.definition_id)
    definition.archive(env.clock())
    await repo.save(definition)
    return definition
