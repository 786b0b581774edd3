"""The ExecutionService gRPC servicer: proto → command → handler → proto, nothing more.

"Who did this" (triggered_by, cancelled_by, paused_by, …) is the authenticated caller
(acting_principal); a body naming someone else is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, timedelta

import grpc
from google.protobuf import any_pb2

from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceServicer
from trinity_execution.api.answers import migration_response, signal_response
from trinity_execution.application.commands import Control, ExecutionCommands, Trigger
from trinity_execution.application.messages import MessageDelivery, Signal
from trinity_execution.application.migrations import LIVE, ExecutionMigrations, Migration
from trinity_execution.application.queries import ExecutionQueries, ListFilter
from trinity_execution.infrastructure import translate
from trinity_platform.authz import acting_principal
from trinity_platform.envelope import message_class
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_platform.unit_of_work import fingerprint
from trinity_process_model.validation import MESSAGE_NAME_PATTERN

pb = execution_service_pb2


MAX_PAYLOAD_BYTES = 256 * 1024
"""A message's payload becomes a step's output: bounded like one (kept messages too)."""


def signal_of(request: pb.SignalExecutionRequest) -> Signal:
    """The message a SignalExecution request carries; INVALID_ARGUMENT listing each problem."""
    problems = []
    if not request.request_id.strip():
        problems.append(FieldViolation("request_id", "is required: it is the message's id"))
    elif len(request.request_id) > 255:
        problems.append(FieldViolation("request_id", "is longer than 255 characters"))
    if not MESSAGE_NAME_PATTERN.fullmatch(request.message_name):
        problems.append(
            FieldViolation(
                "message_name",
                "letters, digits, '.', '_' and '-', at most 128 characters (required)",
            )
        )
    if not request.execution_id and not request.correlation_key:
        problems.append(
            FieldViolation("correlation_key", "is required when execution_id is not given")
        )
    if len(request.correlation_key) > 512:
        problems.append(FieldViolation("correlation_key", "is longer than 512 characters"))
    ttl = None
    if request.HasField("time_to_live"):
        ttl = request.time_to_live.ToTimedelta()
        if ttl < timedelta(0):
            problems.append(FieldViolation("time_to_live", "must not be negative"))
    if request.payload.ByteSize() > MAX_PAYLOAD_BYTES:
        problems.append(
            FieldViolation("payload", f"is larger than {MAX_PAYLOAD_BYTES // 1024} KiB")
        )
    if problems:
        raise InvalidArgument("the message is malformed", problems)
    return Signal(
        message_id=request.request_id,
        message_name=request.message_name,
        correlation_key=request.correlation_key,
        execution_id=request.execution_id,
        payload=translate.struct_to_dict(request.payload),
        time_to_live=ttl,
    )


MAX_MAPPING_ENTRIES = 1_000
MAX_ID_LENGTH = 255


def migration_of(request: pb.MigrateExecutionRequest, by: str) -> Migration:
    """The migration a request asks for; INVALID_ARGUMENT listing each problem."""
    problems = []
    if not request.to_version.strip():
        problems.append(FieldViolation("to_version", "is required"))
    if not request.execution_id and not (request.process_name and request.from_version):
        problems.append(
            FieldViolation("execution_id", "give an execution_id, or process_name and from_version")
        )
    if request.execution_id and request.from_version:
        problems.append(
            FieldViolation("from_version", "give an execution_id or a version, not both")
        )
    for name in ("execution_id", "process_name", "from_version", "to_version"):
        if len(getattr(request, name)) > MAX_ID_LENGTH:
            problems.append(FieldViolation(name, f"is longer than {MAX_ID_LENGTH} characters"))
    if len(request.step_mapping) > MAX_MAPPING_ENTRIES:
        problems.append(
            FieldViolation("step_mapping", f"has more than {MAX_MAPPING_ENTRIES} entries")
        )
    for old, new in request.step_mapping.items():
        if not old.strip() or not new.strip():
            problems.append(FieldViolation(f"step_mapping[{old}]", "step ids must not be empty"))
        elif len(old) > MAX_ID_LENGTH or len(new) > MAX_ID_LENGTH:
            problems.append(
                FieldViolation(
                    f"step_mapping[{old[:40]}]", f"step ids are at most {MAX_ID_LENGTH} characters"
                )
            )
    statuses: tuple[str, ...] = LIVE
    if request.status:
        name = translate.EXECUTION_STATUS_NAMES.get(request.status, "")
        if name not in LIVE:
            problems.append(FieldViolation("status", "only RUNNING or PAUSED executions move"))
        statuses = (name,)
    if problems:
        raise InvalidArgument("the migration request is malformed", problems)
    return Migration(
        request_id=request.request_id,
        to_version=request.to_version,
        execution_id=request.execution_id,
        process_name=request.process_name,
        from_version=request.from_version,
        statuses=statuses,
        explicit=dict(request.step_mapping),
        dry_run=request.dry_run,
        by=by,
    )


class ExecutionServicer(ExecutionServiceServicer):
    def __init__(
        self,
        commands: ExecutionCommands[execution_pb2.Execution],
        queries: ExecutionQueries[execution_pb2.Execution],
        messages: MessageDelivery,
        migrations: ExecutionMigrations,
    ) -> None:
        self._commands = commands
        self._queries = queries
        self._messages = messages
        self._migrations = migrations

    async def MigrateExecution(
        self, request: pb.MigrateExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.MigrateExecutionResponse:
        command = migration_of(request, acting_principal("", "migrated_by"))
        return migration_response(await self._migrations.migrate(command, fingerprint(request)))

    async def SignalExecution(
        self, request: pb.SignalExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignalExecutionResponse:
        answer = await self._messages.signal(signal_of(request), fingerprint(request))
        return signal_response(answer)

    async def TriggerProcess(
        self, request: pb.TriggerProcessRequest, context: grpc.aio.ServicerContext
    ) -> pb.TriggerProcessResponse:
        execution = await self._commands.trigger(
            Trigger(
                request_id=request.request_id,
                process_name=request.process_name,
                version=request.version,
                input=translate.struct_to_dict(request.input),
                triggered_by=acting_principal(request.triggered_by, "triggered_by"),
            ),
            fingerprint(request),
        )
        return pb.TriggerProcessResponse(execution=execution)

    async def CancelExecution(
        self, request: pb.CancelExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelExecutionResponse:
        control = Control(
            request.request_id,
            request.execution_id,
            acting_principal(request.cancelled_by, "cancelled_by"),
            request.reason,
            compensate=request.compensate,
        )
        return pb.CancelExecutionResponse(
            execution=await self._commands.cancel(control, fingerprint(request))
        )

    async def PauseExecution(
        self, request: pb.PauseExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseExecutionResponse:
        control = Control(
            request.request_id,
            request.execution_id,
            acting_principal("", "paused_by"),
            request.reason,
        )
        return pb.PauseExecutionResponse(
            execution=await self._commands.pause(control, fingerprint(request))
        )

    async def ResumeExecution(
        self, request: pb.ResumeExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResumeExecutionResponse:
        control = Control(
            request.request_id, request.execution_id, acting_principal("", "resumed_by")
        )
        return pb.ResumeExecutionResponse(
            execution=await self._commands.resume(control, fingerprint(request))
        )

    async def RetryExecution(
        self, request: pb.RetryExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RetryExecutionResponse:
        control = Control(
            request.request_id,
            request.execution_id,
            acting_principal("", "retried_by"),
            step_id=request.step_id,
        )
        return pb.RetryExecutionResponse(
            execution=await self._commands.retry(control, fingerprint(request))
        )

    async def GetExecution(
        self, request: pb.GetExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetExecutionResponse:
        return pb.GetExecutionResponse(execution=await self._queries.get(request.execution_id))

    async def ListExecutions(
        self, request: pb.ListExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExecutionsResponse:
        status = ""
        if request.status:
            if request.status not in translate.EXECUTION_STATUS_NAMES:
                raise InvalidArgument(
                    "unknown status", [FieldViolation("status", f"unknown value {request.status}")]
                )
            status = translate.EXECUTION_STATUS_NAMES[request.status]
        where = ListFilter(
            process_name=request.process_name,
            status=status,
            created_after=(
                request.created_after.ToDatetime(tzinfo=UTC)
                if request.HasField("created_after")
                else None
            ),
            created_before=(
                request.created_before.ToDatetime(tzinfo=UTC)
                if request.HasField("created_before")
                else None
            ),
        )
        found, token = await self._queries.list(where, request.page_size, request.page_token)
        return pb.ListExecutionsResponse(executions=found, next_page_token=token)

    async def WatchExecution(
        self, request: pb.WatchExecutionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WatchExecutionResponse]:
        async for fact in self._queries.watch(request.execution_id, request.after_sequence):
            packed = any_pb2.Any()
            packed.Pack(message_class(fact.ce_type).FromString(fact.payload))
            yield pb.WatchExecutionResponse(
                sequence=fact.sequence,
                type=fact.ce_type,
                fact=packed,
                occur_time=translate.timestamp(fact.occur_time),
            )
