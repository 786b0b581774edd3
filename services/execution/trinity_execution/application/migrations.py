"""MigrateExecution: move running executions onto another published version.

Each execution moves in its own transaction: the engine's migration decision (state
under the new version, the ExecutionMigrated fact in the outbox) and the row's new
definition id commit together. A request_id makes the call idempotent: the answer is
remembered, and a retry returns it. A bulk call interrupted half-way is finished by
calling again (the executions that moved are no longer on the old version).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from trinity_execution import domain as d
from trinity_execution.application.answers import MigrationOutcome, MigrationReport
from trinity_execution.application.deciding import decision_attempts
from trinity_execution.application.ports import (
    ConcurrentUpdate,
    DefinitionCatalog,
    ExecutionTransaction,
    ExecutionUnitOfWork,
    Presenter,
    PublishedDefinition,
    remembered_answer,
)
from trinity_execution.application.wakeups import Wakeups
from trinity_platform.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    TrinityError,
)
from trinity_platform.unit_of_work import Idempotency

SCOPE = "execution.MigrateExecution"
MAX_PER_CALL = 500
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
    def __init__(
        self,
        uow: ExecutionUnitOfWork,
        catalog: DefinitionCatalog,
        wakeups: Wakeups,
        presenter: Presenter[Any],
    ) -> None:
        self._uow = uow
        self._catalog = catalog
        self._wakeups = wakeups
        self._presenter = presenter

    async def migrate(self, command: Migration, fingerprint: str) -> MigrationReport:
        """``fingerprint``: what the request asks, without its key.

        One execution moves in one write, which looks its key up (a retry is answered
        there, or, when it would be refused now, by a look-up on that refusal). A version
        moves in a write per execution, so a retry of it is answered before the first.
        """
        remembered = bool(command.request_id) and not command.dry_run
        if remembered and not command.execution_id:
            cached = await self._answered(command, fingerprint)
            if cached is not None:
                return cached
        try:
            ids, name, from_version, truncated = await self._selection(command)
            if from_version == command.to_version:
                raise FailedPrecondition(
                    f"the executions already run version {from_version}", reason="SAME_VERSION"
                )
            response = MigrationReport(
                process_name=name,
                to_version=command.to_version,
                truncated=truncated,
                dry_run=command.dry_run,
            )
            if not ids:
                return response
            target = await self._catalog.by_name(name, command.to_version)
            if command.execution_id:
                # One execution: its move and the remembered answer commit together.
                key = command.request_id if remembered else ""
                return await self._one(
                    command, ids[0], from_version, target, response, fingerprint, key
                )
        except TrinityError:
            if remembered and command.execution_id:
                cached = await self._answered(command, fingerprint)
                if cached is not None:
                    return cached
            raise
        outcomes: list[MigrationOutcome] = []
        for execution_id in ids:
            blank = MigrationReport()
            each = await self._one(
                command, execution_id, from_version, target, blank, fingerprint, ""
            )
            outcomes.extend(each.outcomes)
        response = replace(response, outcomes=tuple(outcomes))
        if remembered:

            async def report(_tx: ExecutionTransaction) -> MigrationReport:
                return response

            # Remembered in a write that looks the key up: a concurrent twin that answered
            # first is answered here too, with its answer.
            return await self._uow.write(report, idempotency=self._remembered(command, fingerprint))
        return response

    def _remembered(
        self, command: Migration, fingerprint: str
    ) -> Idempotency[ExecutionTransaction, MigrationReport]:
        presenter = self._presenter
        return remembered_answer(
            SCOPE,
            command.request_id,
            fingerprint,
            presenter.encode_migration,
            presenter.decode_migration,
        )

    async def _answered(self, command: Migration, fingerprint: str) -> MigrationReport | None:
        """The answer remembered for a retry of this request, if it is one."""
        cached = await self._uow.read(
            lambda tx: tx.idempotency.lookup(SCOPE, command.request_id, fingerprint)
        )
        return None if cached is None else self._presenter.decode_migration(cached)

    async def _selection(self, command: Migration) -> tuple[list[str], str, str, bool]:
        """(execution ids, process name, version they must be on, truncated)."""

        async def select(tx: ExecutionTransaction) -> tuple[list[str], str, str, bool]:
            if command.execution_id:
                row = await tx.executions.load(command.execution_id)
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
            ids = await tx.executions.of_version(
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

        return await self._uow.read(select)

    async def _one(
        self,
        command: Migration,
        execution_id: str,
        from_version: str,
        target: PublishedDefinition,
        response: MigrationReport,
        fingerprint: str,
        key: str,
    ) -> MigrationReport:
        """``response`` with this execution's outcome added (remembered under ``key``)."""
        async for _ in decision_attempts():
            first = await self._uow.read(lambda tx: tx.executions.load(execution_id))
            assert first is not None  # executions are never deleted
            if first.process_version != from_version:
                problem = d.MigrationProblem(
                    NOT_ON_VERSION,
                    "",
                    f"the execution runs version {first.process_version}, not {from_version}",
                )
                return _with(response, _refused(execution_id, {}, [problem]))
            source = await self._catalog.by_id(first.process_id)
            wrong = d.mapping_violations(source.process, target.process, command.explicit)
            if wrong:
                raise InvalidArgument(
                    "the step mapping does not fit the versions",
                    [FieldViolation(f"step_mapping[{old}]", why) for old, why in wrong],
                )
            move = _Move(command, execution_id, source, target, response, self._wakeups)
            try:
                answer = await self._uow.write(
                    move.work,
                    idempotency=self._remembered(replace(command, request_id=key), fingerprint),
                )
            except ConcurrentUpdate:
                continue
            return answer
        raise ConcurrentUpdate(f"execution {execution_id} kept changing; try again")


@dataclass
class _Move:
    """One attempt at moving one execution, in the caller's transaction."""

    command: Migration
    execution_id: str
    source: PublishedDefinition
    target: PublishedDefinition
    response: MigrationReport
    wakeups: Wakeups

    async def work(self, tx: ExecutionTransaction) -> MigrationReport:
        return _with(self.response, await self._move(tx))

    async def _move(self, tx: ExecutionTransaction) -> MigrationOutcome:
        source, target = self.source.process, self.target.process
        row = await tx.executions.load(self.execution_id, for_update=True)
        assert row is not None
        if row.process_id != self.source.id:
            raise ConcurrentUpdate(f"execution {self.execution_id} moved meanwhile")
        state = row.execution_state()
        mapping = d.step_mapping(source, target, self.command.explicit)
        carried = {old: new for old, new in mapping.items() if old in state.steps}
        problems = d.migration_problems(source, target, state, mapping)
        if problems or self.command.dry_run:
            return _refused(self.execution_id, carried, problems)
        now = datetime.now(UTC)
        event = d.MigrateExecution(now=now, target=target, mapping=mapping, by=self.command.by)
        decision = d.decide(source, state, event)
        assert not decision.ignored, decision.ignored
        written = await tx.write_decision(row, decision, now)
        self.wakeups.on_commit(tx, written, target.steps)
        await tx.executions.repoint(
            self.execution_id, process_id=self.target.id, process_version=target.version
        )
        return MigrationOutcome(
            execution_id=self.execution_id, can_migrate=True, migrated=True, step_mapping=carried
        )


def _refused(
    execution_id: str, carried: dict[str, str], problems: list[d.MigrationProblem]
) -> MigrationOutcome:
    return MigrationOutcome(
        execution_id=execution_id,
        can_migrate=not problems,
        migrated=False,
        step_mapping=carried,
        problems=tuple(problems),
    )


def _with(report: MigrationReport, outcome: MigrationOutcome) -> MigrationReport:
    """``report`` with ``outcome`` added."""
    return replace(report, outcomes=(*report.outcomes, outcome))
