"""Roles, token parsing, the permissions every RPC declares, "who did this" checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2

import trinity.process.approval.v1.approval_service_pb2
import trinity.process.definition.v1.definition_service_pb2
import trinity.process.execution.v1.execution_service_pb2
import trinity.process.work.v1.work_service_pb2  # noqa: F401 (registers the services)
from trinity_platform.authz import (
    PERMISSIONS,
    ROLES,
    Identity,
    acting_principal,
    authorization_markdown,
    bound_executor,
    parse_auth_tokens,
    required_permissions,
    set_current_identity,
)
from trinity_platform.errors import PermissionDenied
from trinity_platform.interceptors import ALWAYS_ALLOWED_SERVICES

SERVICES = [
    "trinity.process.definition.v1.DefinitionService",
    "trinity.process.execution.v1.ExecutionService",
    "trinity.process.approval.v1.ApprovalService",
    "trinity.process.work.v1.WorkService",
]
README = Path(__file__).resolve().parents[3] / "README.md"


def test_every_rpc_of_the_four_services_declares_a_known_permission() -> None:
    declared = required_permissions(SERVICES)
    methods = {
        f"/{name}/{m.name}"
        for name in SERVICES
        for m in descriptor_pool.Default().FindServiceByName(name).methods
    }
    assert set(declared) == methods and len(methods) == 34
    assert set(declared.values()) <= set(PERMISSIONS)
    assert set(declared.values()) == set(PERMISSIONS)  # no permission is unused
    # the only methods needing no permission: health and reflection
    assert ALWAYS_ALLOWED_SERVICES == (
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1alpha.ServerReflection/",
        "/grpc.reflection.v1.ServerReflection/",
    )


def test_a_method_without_a_permission_stops_the_server_from_starting() -> None:
    with pytest.raises(ValueError, match="declares no known required_permission"):
        required_permissions([health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    with pytest.raises(ValueError, match="no proto descriptors"):
        required_permissions(["trinity.test.Nowhere"])


def test_every_role_grants_only_known_permissions() -> None:
    for granted in ROLES.values():
        assert granted <= set(PERMISSIONS)
    # the calls services make to each other and work reports are nobody else's
    for role, granted in ROLES.items():
        if role != "service":
            assert not granted & {"approvals.manage", "work.manage"}
        if role != "executor":
            assert "work.report" not in granted


def test_tokens_with_roles_and_the_default() -> None:
    tokens = parse_auth_tokens(
        "a=alice@example.com, b=bob@example.com:operator+viewer, "
        "c=service:execution:service, d=service:execution, e=x:nonsense"
    )
    assert tokens["a"] == Identity("alice@example.com", frozenset({"viewer", "approver"}))
    assert tokens["b"].roles == {"operator", "viewer"}
    assert tokens["c"] == Identity("service:execution", frozenset({"service"}))
    # no role suffix: the whole text is the principal, with the default roles
    assert tokens["d"] == Identity("service:execution", frozenset({"viewer", "approver"}))
    assert tokens["e"].principal == "x:nonsense"
    for bad in ("t=system:timeout", "t=SYSTEM:x:admin", "t=", "nope"):
        with pytest.raises(ValueError):
            parse_auth_tokens(bad)


def test_who_did_this_is_the_caller() -> None:
    set_current_identity(Identity("alice@example.com", frozenset({"operator"})))
    try:
        assert acting_principal("", "triggered_by") == "alice@example.com"
        assert acting_principal("Alice@Example.com ", "triggered_by") == "alice@example.com"
        for claimed, reason in (
            ("bob@example.com", "PRINCIPAL_MISMATCH"),
            ("system:timeout", "SYSTEM_PRINCIPAL_RESERVED"),
        ):
            with pytest.raises(PermissionDenied) as caught:
                acting_principal(claimed, "cancelled_by")
            assert caught.value.reason == reason
    finally:
        set_current_identity(None)


def test_an_executor_reports_as_itself_or_one_of_its_instances() -> None:
    set_current_identity(Identity("executor:pool", frozenset({"executor"})))
    try:
        assert bound_executor("executor:pool") == "executor:pool"
        assert bound_executor("executor:pool/pod-1") == "executor:pool/pod-1"
        for other in ("executor:other", "executor:pool/", "executor:poolside", ""):
            with pytest.raises(PermissionDenied) as caught:
                bound_executor(other)
            assert caught.value.reason == "EXECUTOR_MISMATCH"
    finally:
        set_current_identity(None)


def test_without_authentication_the_body_speaks_but_never_for_the_system() -> None:
    assert acting_principal("cli:alice", "triggered_by") == "cli:alice"
    assert bound_executor("executor-1") == "executor-1"
    with pytest.raises(PermissionDenied) as caught:
        acting_principal("system:schedule", "triggered_by")
    assert caught.value.reason == "SYSTEM_PRINCIPAL_RESERVED"


def test_the_readme_shows_the_permission_table() -> None:
    assert authorization_markdown(SERVICES) in README.read_text()


# Every request field that names who acts, and how the servicer binds it to the caller.
BOUND_FIELDS = {
    ("CreateDraftRequest", "created_by"): "acting_principal",
    ("TriggerProcessRequest", "triggered_by"): "acting_principal",
    ("CancelExecutionRequest", "cancelled_by"): "acting_principal",
    ("RecordWorkStartedRequest", "executor_id"): "bound_executor",
    ("HeartbeatWorkRequest", "executor_id"): "bound_executor",
    ("RecordWorkCompletedRequest", "executor_id"): "bound_executor",
    ("RecordWorkFailedRequest", "executor_id"): "bound_executor",
}


def test_every_who_did_this_field_of_a_request_is_bound_to_the_caller() -> None:
    """A new ``*_by`` or ``executor_id`` request field fails here until its servicer
    binds it (acting_principal / bound_executor) and the table above names it."""
    found = set()
    for name in SERVICES:
        for method in descriptor_pool.Default().FindServiceByName(name).methods:
            for field in method.input_type.fields:
                if field.name.endswith("_by") or field.name == "executor_id":
                    found.add((method.input_type.name, field.name))
    assert found == set(BOUND_FIELDS)
    servicers = Path(__file__).resolve().parents[3] / "services"
    source = "\n".join(p.read_text() for p in servicers.glob("*/trinity_*/api/servicer.py"))
    for (_, field), binder in BOUND_FIELDS.items():
        assert f"{binder}(request.{field}" in source, field
