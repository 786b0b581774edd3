"""enum_map: built by name, refused when either side has a member the other lacks."""

from __future__ import annotations

from enum import StrEnum

import pytest

from trinity.process.execution.v1 import execution_pb2
from trinity_platform.enum_maps import EnumMapError, enum_map, reverse


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    COMPENSATING = "compensating"
    COMPENSATION_FAILED = "compensation_failed"


def test_members_map_by_name_both_ways() -> None:
    table = enum_map(Status, execution_pb2.ExecutionStatus, "EXECUTION_STATUS_")
    assert table[Status.RUNNING] == execution_pb2.EXECUTION_STATUS_RUNNING
    assert reverse(table)[execution_pb2.EXECUTION_STATUS_FAILED] is Status.FAILED


def test_a_domain_member_without_a_contract_member_is_refused() -> None:
    class More(StrEnum):
        PENDING = "pending"
        SLEEPING = "sleeping"

    with pytest.raises(EnumMapError, match="has no EXECUTION_STATUS_SLEEPING for More"):
        enum_map(More, execution_pb2.ExecutionStatus, "EXECUTION_STATUS_")


def test_a_contract_member_without_a_domain_member_is_refused_unless_declared() -> None:
    class Fewer(StrEnum):
        PENDING = "pending"
        RUNNING = "running"

    with pytest.raises(EnumMapError, match="Fewer has no member for EXECUTION_STATUS_CANCELLED"):
        enum_map(Fewer, execution_pb2.ExecutionStatus, "EXECUTION_STATUS_")
    rest = ("PAUSED", "COMPLETED", "FAILED", "CANCELLED", "COMPENSATING", "COMPENSATION_FAILED")
    table = enum_map(
        Fewer,
        execution_pb2.ExecutionStatus,
        "EXECUTION_STATUS_",
        proto_only=[f"EXECUTION_STATUS_{name}" for name in rest],
    )
    assert set(table) == {Fewer.PENDING, Fewer.RUNNING}


def test_renames_bridge_different_names() -> None:
    class Spelled(StrEnum):
        PENDING = "pending"
        GOING = "running"
        PAUSED = "paused"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        COMPENSATING = "compensating"
        COMPENSATION_FAILED = "compensation_failed"

    table = enum_map(
        Spelled,
        execution_pb2.ExecutionStatus,
        "EXECUTION_STATUS_",
        renames={Spelled.GOING: "RUNNING"},
    )
    assert table[Spelled.GOING] == execution_pb2.EXECUTION_STATUS_RUNNING
