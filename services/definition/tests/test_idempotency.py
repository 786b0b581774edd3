"""A repeated request_id answers the first result; a reused key with another request is refused."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity_definition.testing import RunningService, valid_spec
from trinity_platform.grpc_errors import error_details


async def test_repeated_keys_return_the_first_result(service: RunningService) -> None:
    stub = service.stub
    create = pb.CreateDraftRequest(request_id="create-1", spec=valid_spec(), created_by="ann")
    first = await stub.CreateDraft(create)
    again = await stub.CreateDraft(create)
    assert again == first
    listed = await stub.ListDefinitions(pb.ListDefinitionsRequest())
    assert [x.id for x in listed.definitions] == [first.definition.id]

    draft_id = first.definition.id
    update = pb.UpdateDraftRequest(
        request_id="update-1", definition_id=draft_id, expected_revision=1, spec=valid_spec()
    )
    updated = await stub.UpdateDraft(update)
    # Without the key the same update would now be stale; with it, the first answer comes back.
    assert await stub.UpdateDraft(update) == updated

    publish = pb.PublishDefinitionRequest(request_id="publish-1", definition_id=draft_id)
    published = await stub.PublishDefinition(publish)
    assert await stub.PublishDefinition(publish) == published
    archive = pb.ArchiveDefinitionRequest(request_id="archive-1", definition_id=draft_id)
    archived = await stub.ArchiveDefinition(archive)
    assert await stub.ArchiveDefinition(archive) == archived
    # The repeated first answer is the answer of then, not the state of now.
    assert await stub.CreateDraft(create) == first
    assert await stub.PublishDefinition(publish) == published

    facts = await service.facts_of(draft_id, 3, wait=0.5)
    assert [f.type.rsplit(".", 1)[1] for f in facts] == [
        "DefinitionPublished",
        "DefinitionArchived",
    ]


async def test_a_reused_key_with_another_request_is_refused(service: RunningService) -> None:
    stub = service.stub
    await stub.CreateDraft(pb.CreateDraftRequest(request_id="k", spec=valid_spec("one")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateDraft(pb.CreateDraftRequest(request_id="k", spec=valid_spec("two")))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(caught.value)[0] == "IDEMPOTENCY_KEY_REUSED"
    # Keys are scoped per operation.
    draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=valid_spec()))).definition
    published = await stub.PublishDefinition(
        pb.PublishDefinitionRequest(request_id="k", definition_id=draft.id)
    )
    assert published.definition.version == "1.0"


async def test_concurrent_retries_with_one_key_create_one_draft(service: RunningService) -> None:
    request = pb.CreateDraftRequest(request_id="racing", spec=valid_spec())
    replies = await asyncio.gather(*(service.stub.CreateDraft(request) for _ in range(5)))
    assert len({r.definition.id for r in replies}) == 1
    listed = await service.stub.ListDefinitions(pb.ListDefinitionsRequest())
    assert len(listed.definitions) == 1
