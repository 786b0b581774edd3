"""Every error answers its status code with ErrorInfo reason and field violations, never INTERNAL."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from trinity.process.definition.v1 import definition_pb2 as d
from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity_definition.testing import VALID_YAML, RunningService, agent_step, valid_spec
from trinity_platform.errors import FieldViolation
from trinity_platform.grpc_errors import error_details


async def fails(
    call: Awaitable[Any], code: grpc.StatusCode, reason: str
) -> tuple[str, list[FieldViolation]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    found_reason, violations = error_details(error)
    assert (error.code(), found_reason) == (code, reason), error.details()
    return error.details() or "", violations


async def draft_of(service: RunningService, spec: d.ProcessSpec) -> d.ProcessDefinition:
    return (await service.stub.CreateDraft(pb.CreateDraftRequest(spec=spec))).definition


async def test_unparsable_sources(service: RunningService) -> None:
    stub = service.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    _, violations = await fails(
        stub.CreateDraft(pb.CreateDraftRequest(yaml="name: [broken\n")),
        invalid,
        "DEFINITION_UNPARSABLE",
    )
    assert violations and "line" in violations[0].description

    teleport = "name: p\nsteps:\n  - id: a\n    teleport: {}\n"
    _, violations = await fails(
        stub.CreateDraft(pb.CreateDraftRequest(yaml=teleport)), invalid, "DEFINITION_UNPARSABLE"
    )
    assert violations[0].field == "steps[0].teleport"
    assert "unknown step kind" in violations[0].description

    # A step message without a kind is an unknown step kind too.
    no_kind = d.ProcessSpec(name="p", steps=[d.Step(id="a")])
    _, violations = await fails(
        stub.CreateDraft(pb.CreateDraftRequest(spec=no_kind)), invalid, "DEFINITION_UNPARSABLE"
    )
    assert violations[0].field.startswith("steps[0]")

    await fails(
        stub.ValidateDefinition(pb.ValidateDefinitionRequest(yaml="steps: {")),
        invalid,
        "DEFINITION_UNPARSABLE",
    )
    _, violations = await fails(
        stub.CreateDraft(pb.CreateDraftRequest()), invalid, "INVALID_ARGUMENT"
    )
    assert violations == [FieldViolation("source", "set spec or yaml")]
    _, violations = await fails(
        stub.CreateDraft(pb.CreateDraftRequest(spec=d.ProcessSpec(steps=[agent_step("a")]))),
        invalid,
        "DEFINITION_NAME_MISSING",
    )
    assert violations[0].field == "name"


async def test_publishing_an_invalid_draft_reports_every_violation(
    service: RunningService,
) -> None:
    stub = service.stub
    spec = valid_spec()
    spec.steps[0].depends_on.append("announce")  # a cycle not through a loop route
    spec.steps.append(agent_step("orphan", "missing"))  # a missing reference
    spec.steps.append(agent_step("write"))  # a duplicate id
    draft = await draft_of(service, spec)
    message, violations = await fails(
        stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "DEFINITION_INVALID",
    )
    fields = [v.field for v in violations]
    assert "steps[5].depends_on[0]" in fields
    assert "steps[6].id" in fields
    assert len(violations) >= 2 and "problem" in message
    # Nothing was published.
    still = (await stub.GetDefinition(pb.GetDefinitionRequest(definition_id=draft.id))).definition
    assert still.status == d.DEFINITION_STATUS_DRAFT and still.version == ""
    assert await service.facts_of(draft.id, 1, wait=0.3) == []


async def test_a_cycle_is_refused(service: RunningService) -> None:
    spec = d.ProcessSpec(name="cyclic", steps=[agent_step("a", "b"), agent_step("b", "a")])
    draft = await draft_of(service, spec)
    _, violations = await fails(
        service.stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "DEFINITION_INVALID",
    )
    assert any("cycle" in v.description for v in violations), violations
    assert all(v.field.startswith("steps[") for v in violations)


async def test_a_published_version_never_changes(service: RunningService) -> None:
    stub = service.stub
    draft = await draft_of(service, valid_spec())
    published = (
        await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id))
    ).definition
    precondition = grpc.StatusCode.FAILED_PRECONDITION
    await fails(
        stub.UpdateDraft(
            pb.UpdateDraftRequest(
                definition_id=draft.id, expected_revision=published.revision, yaml=VALID_YAML
            )
        ),
        precondition,
        "DEFINITION_NOT_DRAFT",
    )
    await fails(
        stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id)),
        precondition,
        "DEFINITION_NOT_DRAFT",
    )
    await stub.ArchiveDefinition(pb.ArchiveDefinitionRequest(definition_id=draft.id))
    await fails(
        stub.ArchiveDefinition(pb.ArchiveDefinitionRequest(definition_id=draft.id)),
        precondition,
        "DEFINITION_NOT_PUBLISHED",
    )
    await fails(
        stub.UpdateDraft(
            pb.UpdateDraftRequest(definition_id=draft.id, expected_revision=5, spec=valid_spec())
        ),
        precondition,
        "DEFINITION_NOT_DRAFT",
    )
    other = await draft_of(service, valid_spec())
    await fails(
        stub.ArchiveDefinition(pb.ArchiveDefinitionRequest(definition_id=other.id)),
        precondition,
        "DEFINITION_NOT_PUBLISHED",
    )
    unchanged = (
        await stub.GetDefinition(pb.GetDefinitionRequest(definition_id=draft.id))
    ).definition
    assert unchanged.spec == published.spec and unchanged.version == "1.0"


async def test_stale_revisions_are_refused(service: RunningService) -> None:
    stub = service.stub
    draft = await draft_of(service, valid_spec())
    await stub.UpdateDraft(
        pb.UpdateDraftRequest(definition_id=draft.id, expected_revision=1, spec=valid_spec())
    )
    aborted = grpc.StatusCode.ABORTED
    await fails(
        stub.UpdateDraft(
            pb.UpdateDraftRequest(definition_id=draft.id, expected_revision=1, spec=valid_spec())
        ),
        aborted,
        "STALE_REVISION",
    )
    await fails(
        stub.PublishDefinition(
            pb.PublishDefinitionRequest(definition_id=draft.id, expected_revision=1)
        ),
        aborted,
        "STALE_REVISION",
    )
    _, violations = await fails(
        stub.UpdateDraft(pb.UpdateDraftRequest(definition_id=draft.id, spec=valid_spec())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert violations[0].field == "expected_revision"


async def test_unknown_ids_names_and_versions(service: RunningService) -> None:
    stub = service.stub
    not_found = grpc.StatusCode.NOT_FOUND
    reason = "DEFINITION_NOT_FOUND"
    await fails(
        stub.GetDefinition(pb.GetDefinitionRequest(definition_id="nope")), not_found, reason
    )
    await fails(
        stub.GetDefinition(pb.GetDefinitionRequest(by_name=pb.NameSelector(name="nobody"))),
        not_found,
        reason,
    )
    draft = await draft_of(service, valid_spec("drafted"))
    # A name with only drafts has no latest published version.
    await fails(
        stub.GetDefinition(pb.GetDefinitionRequest(by_name=pb.NameSelector(name="drafted"))),
        not_found,
        reason,
    )
    await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id))
    await fails(
        stub.GetDefinition(
            pb.GetDefinitionRequest(by_name=pb.NameSelector(name="drafted", version="1.1"))
        ),
        not_found,
        reason,
    )
    # Archiving the only version leaves no latest.
    await stub.ArchiveDefinition(pb.ArchiveDefinitionRequest(definition_id=draft.id))
    await fails(
        stub.GetDefinition(pb.GetDefinitionRequest(by_name=pb.NameSelector(name="drafted"))),
        not_found,
        reason,
    )
    for call in (
        stub.UpdateDraft(
            pb.UpdateDraftRequest(definition_id="nope", expected_revision=1, spec=valid_spec())
        ),
        stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id="nope")),
        stub.ArchiveDefinition(pb.ArchiveDefinitionRequest(definition_id="nope")),
        stub.ValidateDefinition(pb.ValidateDefinitionRequest(definition_id="nope")),
    ):
        await fails(call, not_found, reason)


async def test_malformed_requests(service: RunningService) -> None:
    stub = service.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    _, violations = await fails(
        stub.GetDefinition(
            pb.GetDefinitionRequest(by_name=pb.NameSelector(name="x", version="one"))
        ),
        invalid,
        "INVALID_VERSION",
    )
    assert violations[0].field == "by_name.version"
    for request in (
        pb.GetDefinitionRequest(),
        pb.GetDefinitionRequest(by_name=pb.NameSelector()),
        pb.GetDefinitionRequest(definition_id=""),
    ):
        await fails(stub.GetDefinition(request), invalid, "INVALID_ARGUMENT")
    await fails(stub.PublishDefinition(pb.PublishDefinitionRequest()), invalid, "INVALID_ARGUMENT")
    await fails(
        stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id="x", bump=7)),  # type: ignore[arg-type]
        invalid,
        "INVALID_ARGUMENT",
    )
    await fails(
        stub.ListDefinitions(pb.ListDefinitionsRequest(status=9)),  # type: ignore[arg-type]
        invalid,
        "INVALID_ARGUMENT",
    )
    await fails(
        stub.ListDefinitions(pb.ListDefinitionsRequest(page_size=-1)), invalid, "INVALID_ARGUMENT"
    )
    await fails(
        stub.ListDefinitionVersions(pb.ListDefinitionVersionsRequest()), invalid, "INVALID_ARGUMENT"
    )


async def test_bad_page_tokens(service: RunningService) -> None:
    stub = service.stub
    for _ in range(3):
        await draft_of(service, valid_spec())
    page = await stub.ListDefinitions(pb.ListDefinitionsRequest(page_size=1))
    assert page.next_page_token
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    for token in ("garbage!", "e30", page.next_page_token[:-3]):
        _, violations = await fails(
            stub.ListDefinitions(pb.ListDefinitionsRequest(page_token=token)),
            invalid,
            "INVALID_PAGE_TOKEN",
        )
        assert violations[0].field == "page_token"
    # A token is bound to its query and filter.
    await fails(
        stub.ListDefinitions(
            pb.ListDefinitionsRequest(name="other", page_token=page.next_page_token)
        ),
        invalid,
        "INVALID_PAGE_TOKEN",
    )
    await fails(
        stub.ListDefinitionVersions(
            pb.ListDefinitionVersionsRequest(
                name="research-report", page_token=page.next_page_token
            )
        ),
        invalid,
        "INVALID_PAGE_TOKEN",
    )


async def test_hostile_texts_are_refused_and_the_service_lives_on(service: RunningService) -> None:
    """50,000 nested ``{`` (250 KB) once killed the service with SIGSEGV (libyaml)."""
    stub = service.stub
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    draft = await draft_of(service, valid_spec("hostile-target"))
    for text in ("{" * 50_000, "name: p\nsteps: " + "[" * 50_000, "- " * 50_000 + "x"):
        calls = (
            stub.ValidateDefinition(pb.ValidateDefinitionRequest(yaml=text)),
            stub.CreateDraft(pb.CreateDraftRequest(yaml=text)),
            stub.UpdateDraft(
                pb.UpdateDraftRequest(
                    definition_id=draft.id, expected_revision=draft.revision, yaml=text
                )
            ),
        )
        for call in calls:
            _, violations = await fails(call, invalid, "DEFINITION_UNPARSABLE")
            assert violations[0].field == "yaml"
            assert "nests deeper than 64 levels" in violations[0].description
    _, violations = await fails(
        stub.CreateDraft(pb.CreateDraftRequest(yaml="name: p\n#" + "x" * 1_000_000)),
        invalid,
        "DEFINITION_UNPARSABLE",
    )
    assert violations[0].field == "yaml" and "at most 1,000,000" in violations[0].description
    reply = await stub.ValidateDefinition(pb.ValidateDefinitionRequest(yaml=VALID_YAML))
    assert reply.valid
