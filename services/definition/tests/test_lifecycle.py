"""The full lifecycle over real gRPC, with the facts read back from JetStream."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from trinity.process.definition.v1 import definition_pb2 as d
from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity.process.definition.v1 import facts_pb2
from trinity_definition.testing import VALID_YAML, RunningService, same_spec, valid_spec
from trinity_platform.grpc_errors import error_details

PUBLISHED_TYPE = "trinity.process.definition.v1.DefinitionPublished"
ARCHIVED_TYPE = "trinity.process.definition.v1.DefinitionArchived"


async def test_health_and_reflection(service: RunningService) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", "trinity.process.definition.v1.DefinitionService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(service.channel)
    call = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    assert "trinity.process.definition.v1.DefinitionService" in names
    assert "grpc.health.v1.Health" in names


async def test_full_lifecycle(service: RunningService) -> None:
    stub = service.stub
    spec = valid_spec()
    draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=spec, created_by="ann"))).definition
    assert draft.status == d.DEFINITION_STATUS_DRAFT
    assert (draft.name, draft.version, draft.revision, draft.created_by) == (
        "research-report",
        "",
        1,
        "ann",
    )
    assert same_spec(draft.spec, spec)
    assert draft.HasField("create_time") and not draft.HasField("publish_time")

    # Edit the draft under optimistic concurrency.
    edited = d.ProcessSpec()
    edited.CopyFrom(spec)
    edited.description = "Edited"
    updated = (
        await stub.UpdateDraft(
            pb.UpdateDraftRequest(definition_id=draft.id, expected_revision=1, spec=edited)
        )
    ).definition
    assert updated.revision == 2 and same_spec(updated.spec, edited)

    first = (
        await stub.PublishDefinition(
            pb.PublishDefinitionRequest(definition_id=draft.id, expected_revision=2)
        )
    ).definition
    assert (first.status, first.version, first.revision) == (
        d.DEFINITION_STATUS_PUBLISHED,
        "1.0",
        3,
    )
    assert first.HasField("publish_time")
    assert same_spec(first.spec, edited)

    got = await stub.GetDefinition(pb.GetDefinitionRequest(definition_id=draft.id))
    assert got.definition == first
    latest = await stub.GetDefinition(
        pb.GetDefinitionRequest(by_name=pb.NameSelector(name="research-report"))
    )
    assert latest.definition == first

    # A minor change, then a major one.
    second_draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=spec))).definition
    second = (
        await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=second_draft.id))
    ).definition
    assert second.version == "1.1"
    third_draft = (await stub.CreateDraft(pb.CreateDraftRequest(yaml=_renamed_yaml()))).definition
    third = (
        await stub.PublishDefinition(
            pb.PublishDefinitionRequest(definition_id=third_draft.id, bump=pb.VERSION_BUMP_MAJOR)
        )
    ).definition
    assert third.version == "2.0" and third.name == "research-report"

    async def latest_version() -> str:
        reply = await stub.GetDefinition(
            pb.GetDefinitionRequest(by_name=pb.NameSelector(name="research-report"))
        )
        return reply.definition.version

    assert await latest_version() == "2.0"

    # Archiving hides a version from "latest" but keeps it readable.
    archived = (
        await stub.ArchiveDefinition(pb.ArchiveDefinitionRequest(definition_id=third.id))
    ).definition
    assert archived.status == d.DEFINITION_STATUS_ARCHIVED and archived.HasField("archive_time")
    assert await latest_version() == "1.1"
    by_version = await stub.GetDefinition(
        pb.GetDefinitionRequest(by_name=pb.NameSelector(name="research-report", version="2.0"))
    )
    assert by_version.definition.status == d.DEFINITION_STATUS_ARCHIVED
    assert by_version.definition.spec == third.spec

    # The next version never reuses an archived number.
    fourth_draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=spec))).definition
    fourth = (
        await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=fourth_draft.id))
    ).definition
    assert fourth.version == "2.1"

    versions = await stub.ListDefinitionVersions(
        pb.ListDefinitionVersionsRequest(name="research-report")
    )
    assert [v.version for v in versions.definitions] == ["2.1", "2.0", "1.1", "1.0"]
    assert versions.next_page_token == ""

    # Facts, read back from JetStream: the full definition, then the archive.
    facts = await service.facts_of(first.id, 1)
    assert [f.type for f in facts] == [PUBLISHED_TYPE]
    published = facts_pb2.DefinitionPublished.FromString(facts[0].data)
    assert published.definition == first
    assert facts[0].nats_subject == "trinity.process.definition.facts.v1.DefinitionPublished"
    assert facts[0].subject == first.id
    third_facts = await service.facts_of(third.id, 2)
    assert [f.type for f in third_facts] == [PUBLISHED_TYPE, ARCHIVED_TYPE]
    archived_fact = facts_pb2.DefinitionArchived.FromString(third_facts[1].data)
    assert (archived_fact.definition_id, archived_fact.name, archived_fact.version) == (
        third.id,
        "research-report",
        "2.0",
    )
    assert archived_fact.occur_time == archived.archive_time
    # Creating and editing drafts are not facts: one fact per publish.
    assert len(await service.facts_of(second.id, 2, wait=0.3)) == 1


def _renamed_yaml() -> str:
    return VALID_YAML.replace("name: yaml-process", "name: research-report")


async def test_yaml_and_json_sources(service: RunningService) -> None:
    stub = service.stub
    from_yaml = (await stub.CreateDraft(pb.CreateDraftRequest(yaml=VALID_YAML))).definition
    assert from_yaml.name == "yaml-process"
    assert [s.id for s in from_yaml.spec.steps] == ["research", "notify"]
    assert from_yaml.spec.steps[0].timeout.seconds == 600
    as_json = (
        '{"name": "json-process", "steps": [{"id": "only", "agent_task": '
        '{"agent": "a", "message": "hi"}}]}'
    )
    from_json = (await stub.CreateDraft(pb.CreateDraftRequest(yaml=as_json))).definition
    assert from_json.name == "json-process"
    updated = (
        await stub.UpdateDraft(
            pb.UpdateDraftRequest(
                definition_id=from_json.id,
                expected_revision=from_json.revision,
                yaml=VALID_YAML.replace("yaml-process", "json-process"),
            )
        )
    ).definition
    assert len(updated.spec.steps) == 2 and updated.revision == 2
    published = (
        await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=from_yaml.id))
    ).definition
    assert published.version == "1.0"


async def test_validate_is_a_dry_run(service: RunningService) -> None:
    stub = service.stub
    ok = await stub.ValidateDefinition(pb.ValidateDefinitionRequest(spec=valid_spec()))
    assert ok.valid and list(ok.violations) == []
    ok_text = await stub.ValidateDefinition(pb.ValidateDefinitionRequest(yaml=VALID_YAML))
    assert ok_text.valid

    broken = valid_spec()
    broken.steps[1].depends_on.append("nowhere")
    broken.steps[0].condition = "{{ unclosed"
    broken.steps[2].gateway.routes[1].target = "ghost"
    bad = await stub.ValidateDefinition(pb.ValidateDefinitionRequest(spec=broken))
    assert not bad.valid
    fields = {v.field for v in bad.violations}
    assert "steps[1].depends_on[1]" in fields
    assert "steps[2].gateway.routes[1].target" in fields
    assert any(f.startswith("steps[0].condition") for f in fields)

    draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=broken))).definition
    stored = await stub.ValidateDefinition(pb.ValidateDefinitionRequest(definition_id=draft.id))
    assert list(stored.violations) == list(bad.violations)
    # Nothing changed.
    again = await stub.GetDefinition(pb.GetDefinitionRequest(definition_id=draft.id))
    assert again.definition == draft
    assert await service.facts_of(draft.id, 1, wait=0.3) == []


async def test_list_with_filters_and_pages(service: RunningService) -> None:
    stub = service.stub
    ids = []
    for i in range(5):
        created = await stub.CreateDraft(pb.CreateDraftRequest(spec=valid_spec(f"proc-{i % 2}")))
        ids.append(created.definition.id)
    await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=ids[0]))

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListDefinitions(pb.ListDefinitionsRequest(page_size=2, page_token=token))
        pages += 1
        seen += [x.id for x in page.definitions]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids)) and pages == 3

    drafts = await stub.ListDefinitions(pb.ListDefinitionsRequest(status=d.DEFINITION_STATUS_DRAFT))
    assert [x.id for x in drafts.definitions] == list(reversed(ids[1:]))
    named = await stub.ListDefinitions(pb.ListDefinitionsRequest(name="proc-0"))
    assert [x.id for x in named.definitions] == [ids[4], ids[2], ids[0]]
    published = await stub.ListDefinitions(
        pb.ListDefinitionsRequest(status=d.DEFINITION_STATUS_PUBLISHED, name="proc-0")
    )
    assert [x.version for x in published.definitions] == ["1.0"]
    assert (
        await stub.ListDefinitionVersions(pb.ListDefinitionVersionsRequest(name="unknown"))
    ).definitions == []


async def test_versions_are_paged(service: RunningService) -> None:
    stub = service.stub
    for _ in range(3):
        draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=valid_spec()))).definition
        await stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id))
    page = await stub.ListDefinitionVersions(
        pb.ListDefinitionVersionsRequest(name="research-report", page_size=2)
    )
    assert [v.version for v in page.definitions] == ["1.2", "1.1"]
    rest = await stub.ListDefinitionVersions(
        pb.ListDefinitionVersionsRequest(
            name="research-report", page_size=2, page_token=page.next_page_token
        )
    )
    assert [v.version for v in rest.definitions] == ["1.0"] and rest.next_page_token == ""


async def test_concurrent_publishes_take_distinct_versions(service: RunningService) -> None:
    stub = service.stub
    drafts = [
        (await stub.CreateDraft(pb.CreateDraftRequest(spec=valid_spec()))).definition
        for _ in range(4)
    ]
    published = await asyncio.gather(
        *(
            stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id))
            for draft in drafts
        )
    )
    versions = sorted(p.definition.version for p in published)
    assert versions == ["1.0", "1.1", "1.2", "1.3"]


async def test_concurrent_changes_of_one_draft(service: RunningService) -> None:
    """One of racing publishes (or updates) of one draft wins; the others are refused."""
    stub = service.stub
    draft = (await stub.CreateDraft(pb.CreateDraftRequest(spec=valid_spec()))).definition
    updates = await asyncio.gather(
        *(
            stub.UpdateDraft(
                pb.UpdateDraftRequest(
                    definition_id=draft.id, expected_revision=1, spec=valid_spec()
                )
            )
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(u, BaseException) for u in updates) == 1
    assert {e.code() for e in updates if isinstance(e, grpc.aio.AioRpcError)} == {
        grpc.StatusCode.ABORTED
    }
    publishes = await asyncio.gather(
        *(
            stub.PublishDefinition(pb.PublishDefinitionRequest(definition_id=draft.id))
            for _ in range(3)
        ),
        return_exceptions=True,
    )
    winners = [p for p in publishes if not isinstance(p, BaseException)]
    assert [w.definition.version for w in winners] == ["1.0"]
    losers = [p for p in publishes if isinstance(p, grpc.aio.AioRpcError)]
    assert len(losers) == 2
    assert {error_details(e)[0] for e in losers} == {"DEFINITION_NOT_DRAFT"}
    assert len(await service.facts_of(draft.id, 2, wait=0.3)) == 1
