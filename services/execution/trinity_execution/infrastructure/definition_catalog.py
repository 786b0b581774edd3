"""Published definitions, fetched from the definition service and cached.

A published version never changes, so a compiled process is cached by its
definition id for the life of the process (bounded LRU). "Latest" lookups by
name always ask the definition service: a newer version may have been published.
Concurrent ones of a name share a call that started after each of them asked
(:class:`FreshLookups`), so a trigger never starts a version older than one
published before it was sent, and under load one call answers many triggers.
"""

from __future__ import annotations

from collections import OrderedDict

import grpc

from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity_execution.application.ports import PublishedDefinition
from trinity_execution.domain.process import CompiledProcess
from trinity_execution.infrastructure.fresh_lookups import FreshLookups
from trinity_platform.errors import FailedPrecondition, NotFound, Unavailable
from trinity_process_model.proto_codec import spec_from_proto


class DefinitionCatalog:
    """``stub``: the definition service's (a :class:`DefinitionServiceStub`)."""

    def __init__(
        self, stub: DefinitionServiceStub, *, cache_size: int = 1024, timeout: float = 10.0
    ):
        self._stub = stub
        self._cache: OrderedDict[str, PublishedDefinition] = OrderedDict()
        self._cache_size = cache_size
        self._timeout = timeout
        self.latest_lookups: FreshLookups[str, definition_pb2.ProcessDefinition] = FreshLookups(
            self._ask_latest
        )

    @classmethod
    def over(cls, channel: grpc.aio.Channel) -> DefinitionCatalog:
        return cls(DefinitionServiceStub(channel))

    async def by_name(self, name: str, version: str = "") -> PublishedDefinition:
        """The named version, or the latest one; refuses drafts and archived versions.

        Without a version, the latest version must be published: when it is archived,
        the trigger is refused (LATEST_VERSION_ARCHIVED) rather than silently starting an
        older version; naming that version starts it."""
        if not version:
            definition = await self.latest_lookups.get(name)
        else:
            request = definition_service_pb2.GetDefinitionRequest(
                by_name=definition_service_pb2.NameSelector(name=name, version=version)
            )
            definition = await self._get(request, f"process {name!r} has no version {version}")
        if definition.status == definition_pb2.DEFINITION_STATUS_ARCHIVED and not version:
            raise FailedPrecondition(
                f"the latest version {definition.version} of process {name!r} is archived: "
                "publish a new version, or name the version to run",
                reason="LATEST_VERSION_ARCHIVED",
            )
        if definition.status != definition_pb2.DEFINITION_STATUS_PUBLISHED:
            status = definition_pb2.DefinitionStatus.Name(definition.status)
            raise FailedPrecondition(
                f"process {name!r} version {definition.version or '(draft)'} is not published ({status})",
                reason="DEFINITION_NOT_PUBLISHED",
            )
        return self._remember(definition)

    async def _ask_latest(self, name: str) -> definition_pb2.ProcessDefinition:
        """The newest version of `name`, whatever its status (drafts have none)."""
        request = definition_service_pb2.ListDefinitionVersionsRequest(name=name, page_size=1)
        what = f"no published process named {name!r}"
        try:
            reply = await self._stub.ListDefinitionVersions(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, what) from None
        if not reply.definitions:
            raise NotFound(f"no published process named {name!r}", reason="DEFINITION_NOT_FOUND")
        return reply.definitions[0]

    async def by_id(self, definition_id: str) -> PublishedDefinition:
        """A version an execution already runs (archived ones included)."""
        cached = self._cache.get(definition_id)
        if cached is not None:
            self._cache.move_to_end(definition_id)
            return cached
        request = definition_service_pb2.GetDefinitionRequest(definition_id=definition_id)
        return self._remember(await self._get(request, f"definition {definition_id} not found"))

    async def _get(
        self, request: definition_service_pb2.GetDefinitionRequest, missing: str
    ) -> definition_pb2.ProcessDefinition:
        """The definition; ``missing`` is what a NOT_FOUND says."""
        try:
            reply = await self._stub.GetDefinition(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise self._translate(error, missing) from None
        return reply.definition

    @staticmethod
    def _translate(error: grpc.aio.AioRpcError, what: str) -> Exception:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return NotFound(what, reason="DEFINITION_NOT_FOUND")
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            return NotFound(f"{what}: {error.details()}", reason="DEFINITION_NOT_FOUND")
        return Unavailable(
            f"definition service unavailable: {error.code().name}",
            reason="DEFINITION_SERVICE_UNAVAILABLE",
        )

    def _remember(self, definition: definition_pb2.ProcessDefinition) -> PublishedDefinition:
        cached = self._cache.get(definition.id)
        if cached is not None:
            return cached
        spec = spec_from_proto(definition.spec)
        published = PublishedDefinition(
            id=definition.id,
            name=definition.name,
            version=definition.version,
            process=CompiledProcess.compile(definition.id, definition.version, spec),
        )
        self._cache[definition.id] = published
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return published
