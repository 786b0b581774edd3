"""MigrateExecution: move running executions onto another published version.

Each execution moves in its own transaction: the engine's migration decision (state
under the new version, the ExecutionMigrated fact in the outbox) and the row's new
definition id commit together. A request_id makes the call idempotent: the answer is
remembered, and a retry returns it. A bulk call interrupted half-way is finished by
calling again (the executions that moved are no longer on the old version).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity.process.execution.v1 import execution_service_pb2 as pb
from trinity_execution import domain as d
from trinity_execution.application.wakeups import Wakeups
from trinity_execution.infrastructure.decision_store import Written, write_decision
from trinity_execution.infrastructure.definition_catalog import (
    DefinitionCatalog,
    PublishedDefinition,
)
from trinity_execution.infrastructure.repository import (
    ConcurrentUpdate,
    executions_of_version,
    load_execution,
    repoint_execution,
)
from trinity_platform.db import read_only
from trinity_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from trinity_platform.idempotency import lookup, remember, request_fingerprint, run_idempotent

SCOPE = "execution.MigrateExecution"
MAX_PER_CALL = 500
MAX_CONFLICT_RETRIES = 20
LIVE = ("running", "paused")
NOT_ON_VERSION = "NOT_ON_VERSION"


@dataclass(frozen=True)
class Migration:
    request_id: str
    to_version: str
    execution_id: str = ""
    process_name: str = ""
    from_version: str = ""
    statuses: tuple[str, ...] = LIVE
    explicit: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    by: str = ""


class ExecutionMigrations:
    def __init__(self, engine: AsyncEngine, catalog: DefinitionCatalog, wakeups: Wakeups) -> None:
        self._engine = engine
        self._catalog = catalog
        self._wakeups = wakeups

    async def migrate(
        self, command: Migration, request: pb.MigrateExecutionRequest
    ) -> pb.MigrateExecutionResponse:
        remembered = bool(command.request_id) and not command.dry_run
        fingerprint = request_fingerprint(request)
        if remembered:
            async with read_only(self._engine) as conn:
                cached = await lookup(conn, SCOPE, command.request_id, fingerprint)
            if cached is not None:
                return pb.MigrateExecutionResponse.FromString(cached)
        ids, name, from_version, truncated = await self._selection(command)
        response = pb.MigrateExecutionResponse(
            process_name=name,
            to_version=command.to_version,
            truncated=truncated,
            dry_run=command.dry_run,
        )
        if from_version == command.to_version:
            raise FailedPrecondition(
                f"the executions already run version {from_version}", reason="SAME_VERSION"
            )
        if not ids:
            return response
        target = await self._catalog.by_name(name, command.to_version)
        if command.execution_id:
            # One execution: its move and the remembered answer commit together.
            key = command.request_id if remembered else ""
            return await self._one(command, ids[0], from_version, target, response, request, key)
        for execution_id in ids:
            blank = pb.MigrateExecutionResponse()
            each = await self._one(command, execution_id, from_version, target, blank, request, "")
            response.outcomes.extend(each.outcomes)
        if remembered:
            async with self._engine.begin() as conn:
                cached = await lookup(conn, SCOPE, command.request_id, fingerprint)
                if cached is not None:  # a concurrent twin answered first
                    return pb.MigrateExecutionResponse.FromString(cached)
                await remember(
                    conn,
                    SCOPE,
                    command.request_id,
                    fingerprint,
                    response.SerializeToString(deterministic=True),
                )
        return response

    async def _selection(self, command: Migration) -> tuple[list[str], str, str, bool]:
        """(execution ids, process name, version they must be on, truncated)."""
        async with read_only(self._engine) as conn:
            if command.execution_id:
                row = await load_execution(conn, command.execution_id)
                if row is None:
                    raise NotFound(
                        f"execution {command.execution_id} not found",
                        reason="EXECUTION_NOT_FOUND",
                    )
                if command.process_name and command.process_name != row.process_name:
                    raise InvalidArgument(
                        "the execution runs another process",
                        [FieldViolation("process_name", f"execution runs {row.process_name!r}")],
                    )
                return [row.id], row.process_name, row.process_version, False
            ids = await executions_of_version(
                conn,
                command.process_name,
                command.from_version,
                command.statuses,
                MAX_PER_CALL + 1,
            )
        return (
            ids[:MAX_PER_CALL],
            command.process_name,
            command.from_version,
            len(ids) > MAX_PER_CALL,
        )

    async def _one(
        self,
        command: Migration,
        execution_id: str,
        from_version: str,
        target: PublishedDefinition,
        response: pb.MigrateExecutionResponse,
        request: pb.MigrateExecutionRequest,
        key: str,
    ) -> pb.MigrateExecutionResponse:
        """``response`` with this execution's outcome added (remembered under ``key``)."""
        for _ in range(MAX_CONFLICT_RETRIES):
            async with read_only(self._engine) as conn:
                first = await load_execution(conn, execution_id)
            assert first is not None  # executions are never deleted
            if first.process_version != from_version:
                problem = d.MigrationProblem(
                    NOT_ON_VERSION,
                    "",
                    f"the execution runs version {first.process_version}, not {from_version}",
                )
                response.outcomes.append(_refused(execution_id, {}, [problem]))
                return response
            source = await self._catalog.by_id(first.process_id)
            wrong = d.mapping_violations(source.process, target.process, command.explicit)
            if wrong:
                raise InvalidArgument(
                    "the step mapping does not fit the versions",
                    [FieldViolation(f"step_mapping[{old}]", why) for old, why in wrong],
                )
            move = _Move(command, execution_id, source, target, response)
            try:
                answer = await run_idempotent(
                    self._engine, SCOPE, key, request, move.work, pb.MigrateExecutionResponse
                )
            except ConcurrentUpdate:
                continue
            for each in move.written:
                self._wakeups.after_commit(each, target.process.steps)
            return answer
        raise ConcurrentUpdate(f"execution {execution_id} kept changing; try again")


@dataclass
class _Move:
    """One attempt at moving one execution, in the caller's transaction."""

    command: Migration
    execution_id: str
    source: PublishedDefinition
    target: PublishedDefinition
    response: pb.MigrateExecutionResponse
    written: list[Written] = field(default_factory=list)

    async def work(self, conn: AsyncConnection) -> pb.MigrateExecutionResponse:
        answer = pb.MigrateExecutionResponse()
        answer.CopyFrom(self.response)
        answer.outcomes.append(await self._move(conn))
        return answer

    async def _move(self, conn: AsyncConnection) -> pb.MigrationOutcome:
        source, target = self.source.process, self.target.process
        row = await load_execution(conn, self.execution_id, for_update=True)
        assert row is not None
        if row.process_id != self.source.id:
            raise ConcurrentUpdate(f"execution {self.execution_id} moved meanwhile")
        state = d.ExecutionState.from_dict(row.state)
        mapping = d.step_mapping(source, target, self.command.explicit)
        carried = {old: new for old, new in mapping.items() if old in state.steps}
        problems = d.migration_problems(source, target, state, mapping)
        if problems or self.command.dry_run:
            return _refused(self.execution_id, carried, problems)
        now = datetime.now(UTC)
        event = d.MigrateExecution(now=now, target=target, mapping=mapping, by=self.command.by)
        decision = d.decide(source, state, event)
        assert not decision.ignored, decision.ignored
        self.written.append(await write_decision(conn, row, decision, now))
        await repoint_execution(
            conn, self.execution_id, process_id=self.target.id, process_version=target.version
        )
        return pb.MigrationOutcome(
            execution_id=self.execution_id, can_migrate=True, migrated=True, step_mapping=carried
        )


def _refused(
    execution_id: str, carried: dict[str, str], problems: list[d.MigrationProblem]
) -> pb.MigrationOutcome:
    return pb.MigrationOutcome(
        execution_id=execution_id,
        can_migrate=not problems,
        migrated=False,
        step_mapping=carried,
        problems=[
            pb.MigrationProblem(code=p.code, step_id=p.step_id, message=p.message) for p in problems
        ],
    )
