"""Rows of the executions table for tests that write decisions against the real database."""

from __future__ import annotations

from datetime import datetime

from trinity_execution import domain as d
from trinity_execution.infrastructure.repository import ExecutionRow


def first_row(state: d.ExecutionState, process_name: str, now: datetime) -> ExecutionRow:
    """The row a new execution in ``state`` is inserted with (revision 1, no facts yet)."""
    return ExecutionRow(
        id=state.execution_id,
        process_id=state.definition_id,
        process_name=process_name,
        process_version=state.version,
        status=str(state.status),
        trigger_kind=str(state.trigger_kind),
        triggered_by=state.triggered_by,
        state=state.header_dict(),
        revision=1,
        fact_count=0,
        created_at=now,
        updated_at=now,
        ended_at=state.ended_at,
    )
