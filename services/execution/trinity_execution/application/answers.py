"""What SignalExecution and MigrateExecution answer, as plain values.

The API turns them into its messages; a remembered answer (idempotency) is stored in
that same encoding, through :class:`~trinity_execution.application.ports.Presenter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from trinity_execution import domain as d


@dataclass(frozen=True)
class SignalAnswer:
    """Delivered to a waiting step now, or kept until ``expires_at``."""

    delivered: bool
    execution_id: str = ""
    step_id: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True)
class MigrationOutcome:
    execution_id: str
    can_migrate: bool
    migrated: bool
    step_mapping: dict[str, str] = field(default_factory=dict)
    problems: tuple[d.MigrationProblem, ...] = ()


@dataclass(frozen=True)
class MigrationReport:
    process_name: str = ""
    to_version: str = ""
    truncated: bool = False
    dry_run: bool = False
    outcomes: tuple[MigrationOutcome, ...] = ()
