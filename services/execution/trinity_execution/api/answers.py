"""The application's answers as the API's messages, and remembered in that encoding
(a retry is answered byte for byte what the first request was)."""

from __future__ import annotations

from datetime import UTC, datetime

from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1 import execution_service_pb2 as pb
from trinity_execution import domain as d
from trinity_execution.application.answers import MigrationOutcome, MigrationReport, SignalAnswer
from trinity_execution.infrastructure import translate


def signal_response(answer: SignalAnswer) -> pb.SignalExecutionResponse:
    response = pb.SignalExecutionResponse(
        delivered=answer.delivered, execution_id=answer.execution_id, step_id=answer.step_id
    )
    if answer.expires_at is not None:
        response.expire_time.FromDatetime(answer.expires_at)
    return response


def signal_answer(response: pb.SignalExecutionResponse) -> SignalAnswer:
    return SignalAnswer(
        delivered=response.delivered,
        execution_id=response.execution_id,
        step_id=response.step_id,
        expires_at=response.expire_time.ToDatetime(tzinfo=UTC)
        if response.HasField("expire_time")
        else None,
    )


def migration_response(report: MigrationReport) -> pb.MigrateExecutionResponse:
    return pb.MigrateExecutionResponse(
        process_name=report.process_name,
        to_version=report.to_version,
        truncated=report.truncated,
        dry_run=report.dry_run,
        outcomes=[
            pb.MigrationOutcome(
                execution_id=o.execution_id,
                can_migrate=o.can_migrate,
                migrated=o.migrated,
                step_mapping=o.step_mapping,
                problems=[
                    pb.MigrationProblem(code=p.code, step_id=p.step_id, message=p.message)
                    for p in o.problems
                ],
            )
            for o in report.outcomes
        ],
    )


def migration_report(response: pb.MigrateExecutionResponse) -> MigrationReport:
    return MigrationReport(
        process_name=response.process_name,
        to_version=response.to_version,
        truncated=response.truncated,
        dry_run=response.dry_run,
        outcomes=tuple(
            MigrationOutcome(
                execution_id=o.execution_id,
                can_migrate=o.can_migrate,
                migrated=o.migrated,
                step_mapping=dict(o.step_mapping),
                problems=tuple(
                    d.MigrationProblem(p.code, p.step_id, p.message) for p in o.problems
                ),
            )
            for o in response.outcomes
        ),
    )


class ProtoPresenter:
    """:class:`~trinity_execution.application.ports.Presenter` of the gRPC API."""

    def execution(
        self,
        process: d.CompiledProcess,
        state: d.ExecutionState,
        *,
        process_name: str,
        created_at: datetime,
        with_steps: bool = True,
    ) -> execution_pb2.Execution:
        return translate.execution_view(
            process, state, process_name=process_name, created_at=created_at, with_steps=with_steps
        )

    def encode_execution(self, view: execution_pb2.Execution) -> bytes:
        return view.SerializeToString(deterministic=True)

    def decode_execution(self, data: bytes) -> execution_pb2.Execution:
        return execution_pb2.Execution.FromString(data)

    def encode_signal(self, answer: SignalAnswer) -> bytes:
        return signal_response(answer).SerializeToString(deterministic=True)

    def decode_signal(self, data: bytes) -> SignalAnswer:
        return signal_answer(pb.SignalExecutionResponse.FromString(data))

    def encode_migration(self, report: MigrationReport) -> bytes:
        return migration_response(report).SerializeToString(deterministic=True)

    def decode_migration(self, data: bytes) -> MigrationReport:
        return migration_report(pb.MigrateExecutionResponse.FromString(data))
