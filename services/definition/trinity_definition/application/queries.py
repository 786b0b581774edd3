"""Query handlers: read definitions without changing anything."""

from __future__ import annotations

from dataclasses import dataclass

from trinity_definition.application.commands import SpecSource
from trinity_definition.application.handlers import read_source, require_id
from trinity_definition.application.paging import decode_token, encode_token, page_size
from trinity_definition.application.ports import DefinitionRepository, Environment, ListCursor
from trinity_definition.domain.definition import DefinitionStatus, DefinitionVersion, Version
from trinity_platform.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class Page:
    definitions: list[DefinitionVersion]
    next_page_token: str


async def get_by_id(definition_id: str, repo: DefinitionRepository) -> DefinitionVersion:
    require_id(definition_id)
    return await repo.get(definition_id)


async def get_by_name(name: str, version: str, repo: DefinitionRepository) -> DefinitionVersion:
    """The named version (published or archived), or the latest published when empty."""
    if not name.strip():
        raise InvalidArgument(
            "by_name.name is required", [FieldViolation("by_name.name", "is required")]
        )
    if not version.strip():
        return await repo.latest_published(name)
    return await repo.by_version(name, Version.parse(version, "by_name.version"))


async def validate(
    source: SpecSource | None, definition_id: str, repo: DefinitionRepository, env: Environment
) -> list[FieldViolation]:
    """Every violation of a spec, of authoring text, or of a stored definition."""
    if source is None:
        require_id(definition_id)
        spec = (await repo.get(definition_id)).spec
    else:
        spec = read_source(source, env)
    return env.validate(spec)


async def list_definitions(
    status: DefinitionStatus | None,
    name: str,
    requested_size: int,
    token: str,
    repo: DefinitionRepository,
) -> Page:
    filters = (status.value if status else "", name)
    limit = page_size(requested_size)
    after = decode_token(token, "list", filters, 1)
    rows = await repo.list_page(status, name, limit + 1, after)
    return _page(rows, limit, "list", filters)


async def list_versions(
    name: str, requested_size: int, token: str, repo: DefinitionRepository
) -> Page:
    if not name.strip():
        raise InvalidArgument("name is required", [FieldViolation("name", "is required")])
    limit = page_size(requested_size)
    after = decode_token(token, "versions", (name,), 2)
    rows = await repo.list_versions(name, limit + 1, after)
    return _page(rows, limit, "versions", (name,))


def _page(
    rows: list[tuple[DefinitionVersion, ListCursor]],
    limit: int,
    query: str,
    filters: tuple[str, ...],
) -> Page:
    token = ""
    if len(rows) > limit:
        rows = rows[:limit]
        token = encode_token(query, filters, rows[-1][1])
    return Page([definition for definition, _ in rows], token)
