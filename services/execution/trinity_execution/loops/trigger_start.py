"""Starting a trigger row's process from a loop (event triggers, schedules)."""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from trinity.process.execution.v1 import execution_service_pb2
from trinity_execution import domain as d
from trinity_execution.application.commands import ExecutionCommands, Trigger
from trinity_execution.infrastructure.trigger_store import TriggerRow
from trinity_platform.unit_of_work import fingerprint


async def start(
    commands: ExecutionCommands[Any],
    row: TriggerRow,
    *,
    key: str,
    data: dict[str, Any],
    triggered_by: str,
    kind: d.TriggerKind,
) -> None:
    """Start ``row``'s process with ``data``, idempotent by ``key``: fingerprinted as the
    TriggerProcess request it stands for, so a repeat with other content is refused."""
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=key,
        process_name=row.process_name,
        version=row.process_version,
        input=struct_pb2.Struct(),
        triggered_by=triggered_by,
    )
    request.input.update(data)
    await commands.trigger(
        Trigger(
            request_id=key,
            process_name=row.process_name,
            version=row.process_version,
            input=dict(data),
            triggered_by=triggered_by,
            trigger_kind=kind,
        ),
        fingerprint(request),
    )
