"""DefinitionService over gRPC: proto → command, handler, result → proto.

Errors are raised as the TrinityError family; the platform's ErrorMappingInterceptor
turns them into status codes with ErrorInfo and BadRequest details. Field paths of
spec violations are relative to the ProcessSpec (``steps[2].gateway.routes[0].target``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from google.protobuf.message import Message

from trinity.process.definition.v1 import definition_pb2
from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceServicer
from trinity_definition.api.translate import bump_from_proto, status_from_proto
from trinity_definition.application import handlers, queries
from trinity_definition.application.commands import (
    ArchiveDefinition,
    CreateDraft,
    PublishDefinition,
    SpecSource,
    UpdateDraft,
)
from trinity_definition.application.ports import DefinitionRepository, Environment
from trinity_definition.codec import definition_message, spec_of
from trinity_definition.domain.definition import DefinitionVersion
from trinity_definition.domain.errors import DefinitionUnparsable
from trinity_definition.infrastructure.repository import SqlDefinitionRepository
from trinity_definition.infrastructure.transaction import SqlDefinitionTransaction
from trinity_platform.authz import acting_principal
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_platform.unit_of_work import Idempotency, UnitOfWork, fingerprint

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DefinitionService"].full_name


def _message(definition: DefinitionVersion, repo: SqlDefinitionRepository) -> Any:
    """The resource message, with the spec as stored (no decode and re-encode)."""
    return definition_message(definition, repo.spec_message_of(definition))


def _enum_violation(field: str, value: int) -> InvalidArgument:
    return InvalidArgument(
        f"{field} has an unknown value {value}", [FieldViolation(field, "unknown enum value")]
    )


R = TypeVar("R")
M = TypeVar("M", bound=Message)
Command = Callable[[DefinitionRepository], Awaitable[DefinitionVersion]]


class DefinitionServicer(DefinitionServiceServicer):
    def __init__(self, uow: UnitOfWork[SqlDefinitionTransaction], env: Environment) -> None:
        self._uow = uow
        self._env = env

    async def _command(self, scope: str, request: Any, response_type: type[M], run: Command) -> M:
        """``run`` in a write transaction, idempotent by the request's key.

        A repeated key answers the response of then: a definition keeps no past
        revisions to rebuild it from, so the response itself is remembered.
        """

        async def body(tx: SqlDefinitionTransaction) -> M:
            definition = await run(tx.definitions)
            # Every command's response is {definition}.
            return response_type(definition=_message(definition, tx.definitions))

        async def replay(tx: SqlDefinitionTransaction, remembered: bytes) -> M:
            return response_type.FromString(remembered)

        key = request.request_id
        return await self._uow.write(
            body,
            idempotency=Idempotency(
                scope,
                key,
                fingerprint(request) if key else "",
                remember=lambda response: response.SerializeToString(deterministic=True),
                replay=replay,
            ),
        )

    async def _query(self, run: Callable[[SqlDefinitionRepository], Awaitable[R]]) -> R:
        return await self._uow.read(lambda tx: run(tx.definitions))

    async def _source(
        self, request: Any, spec_field: str = "spec", text_field: str = "yaml"
    ) -> SpecSource:
        """The spec of a request, read in a worker thread: a text or spec of a few megabytes
        takes seconds of CPU, which on the event loop would stall every other call of the
        service, health checks included."""
        which = request.WhichOneof("source")
        if which == spec_field:
            return await asyncio.to_thread(spec_of, getattr(request, spec_field))
        if which == text_field:
            text = getattr(request, text_field)
            try:
                return await asyncio.to_thread(handlers.read_source, text, self._env)
            except DefinitionUnparsable as error:
                # Problems of the whole text (size, nesting, syntax) belong to its field.
                raise DefinitionUnparsable(
                    error.message,
                    [
                        FieldViolation(v.field or text_field, v.description)
                        for v in error.violations
                    ],
                ) from None
        raise InvalidArgument(
            "a spec or YAML/JSON text is required",
            [FieldViolation("source", f"set {spec_field} or {text_field}")],
        )

    # ------------------------------------------------------------------ commands

    async def CreateDraft(
        self, request: pb.CreateDraftRequest, context: Any
    ) -> pb.CreateDraftResponse:
        command = CreateDraft(
            await self._source(request), acting_principal(request.created_by, "created_by")
        )

        return await self._command(
            "definition.CreateDraft",
            request,
            pb.CreateDraftResponse,
            lambda repo: handlers.create_draft(command, repo, self._env),
        )

    async def UpdateDraft(
        self, request: pb.UpdateDraftRequest, context: Any
    ) -> pb.UpdateDraftResponse:
        handlers.require_id(request.definition_id)
        command = UpdateDraft(
            request.definition_id, request.expected_revision, await self._source(request)
        )

        return await self._command(
            "definition.UpdateDraft",
            request,
            pb.UpdateDraftResponse,
            lambda repo: handlers.update_draft(command, repo, self._env),
        )

    async def PublishDefinition(
        self, request: pb.PublishDefinitionRequest, context: Any
    ) -> pb.PublishDefinitionResponse:
        try:
            bump = bump_from_proto(request.bump)
        except ValueError:
            raise _enum_violation("bump", request.bump) from None
        command = PublishDefinition(request.definition_id, bump, request.expected_revision)

        return await self._command(
            "definition.PublishDefinition",
            request,
            pb.PublishDefinitionResponse,
            lambda repo: handlers.publish_definition(command, repo, self._env),
        )

    async def ArchiveDefinition(
        self, request: pb.ArchiveDefinitionRequest, context: Any
    ) -> pb.ArchiveDefinitionResponse:
        command = ArchiveDefinition(request.definition_id)

        return await self._command(
            "definition.ArchiveDefinition",
            request,
            pb.ArchiveDefinitionResponse,
            lambda repo: handlers.archive_definition(command, repo, self._env),
        )

    # ------------------------------------------------------------------ queries

    async def ValidateDefinition(
        self, request: pb.ValidateDefinitionRequest, context: Any
    ) -> pb.ValidateDefinitionResponse:
        which = request.WhichOneof("source")
        if which == "definition_id":
            source: SpecSource | None = None
        else:
            source = await self._source(request)

        async def work(repo: SqlDefinitionRepository) -> list[FieldViolation]:
            return await queries.validate(source, request.definition_id, repo, self._env)

        violations = await self._query(work)
        return pb.ValidateDefinitionResponse(
            valid=not violations,
            violations=[
                definition_pb2.Violation(field=v.field, description=v.description)
                for v in violations
            ],
        )

    async def GetDefinition(
        self, request: pb.GetDefinitionRequest, context: Any
    ) -> pb.GetDefinitionResponse:
        which = request.WhichOneof("selector")
        if which is None:
            raise InvalidArgument(
                "definition_id or by_name is required",
                [FieldViolation("selector", "set definition_id or by_name")],
            )

        async def work(repo: SqlDefinitionRepository) -> pb.GetDefinitionResponse:
            if which == "definition_id":
                found = await queries.get_by_id(request.definition_id, repo)
            else:
                found = await queries.get_by_name(
                    request.by_name.name, request.by_name.version, repo
                )
            return pb.GetDefinitionResponse(definition=_message(found, repo))

        return await self._query(work)

    async def ListDefinitions(
        self, request: pb.ListDefinitionsRequest, context: Any
    ) -> pb.ListDefinitionsResponse:
        try:
            status = status_from_proto(request.status)
        except ValueError:
            raise _enum_violation("status", request.status) from None

        async def work(repo: SqlDefinitionRepository) -> pb.ListDefinitionsResponse:
            page = await queries.list_definitions(
                status, request.name, request.page_size, request.page_token, repo
            )
            return pb.ListDefinitionsResponse(
                definitions=[_message(d, repo) for d in page.definitions],
                next_page_token=page.next_page_token,
            )

        return await self._query(work)

    async def ListDefinitionVersions(
        self, request: pb.ListDefinitionVersionsRequest, context: Any
    ) -> pb.ListDefinitionVersionsResponse:
        async def work(repo: SqlDefinitionRepository) -> pb.ListDefinitionVersionsResponse:
            page = await queries.list_versions(
                request.name, request.page_size, request.page_token, repo
            )
            return pb.ListDefinitionVersionsResponse(
                definitions=[_message(d, repo) for d in page.definitions],
                next_page_token=page.next_page_token,
            )

        return await self._query(work)
