"""Query handlers: read definitions without changing anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trinity_definition.application.commands import SpecSource
from trinity_definition.application.handlers import read_source, require_id
from trinity_definition.application.ports import DefinitionRepository, Environment, ListCursor
from trinity_definition.domain.definition import DefinitionStatus, DefinitionVersion, Version
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_platform.pagination import encode_page_token, page_request


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
    scope = ("list", status.value if status else "", name)
    page = page_request(requested_size, token, scope, key_length=1)
    rows = await repo.list_page(status, name, page.size + 1, _cursor(page.after))
    return _page(rows, page.size, scope)


async def list_versions(
    name: str, requested_size: int, token: str, repo: DefinitionRepository
) -> Page:
    if not name.strip():
        raise InvalidArgument("name is required", [FieldViolation("name", "is required")])
    scope = ("versions", name)
    page = page_request(requested_size, token, scope, key_length=2)
    rows = await repo.list_versions(name, page.size + 1, _cursor(page.after))
    return _page(rows, page.size, scope)


def _cursor(after: tuple[Any, ...] | None) -> ListCursor | None:
    """The keyset position of a (signed, so trusted) page token."""
    return None if after is None else ListCursor(tuple(int(k) for k in after))


def _page(
    rows: list[tuple[DefinitionVersion, ListCursor]], limit: int, scope: tuple[str, ...]
) -> Page:
    """A page token is bound to its query and filter (``scope``)."""
    token = ""
    if len(rows) > limit:
        rows = rows[:limit]
        token = encode_page_token(rows[-1][1].key, scope)
    return Page([definition for definition, _ in rows], token)
