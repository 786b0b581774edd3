"""Each step's state in a row of its own (execution_steps), apart from the execution's
row: a decision rewrites only the steps it changed, so a step costs the same in a
process of 10 steps or 1,000. Existing executions' steps move out of their JSON state.

Revision ID: 0008
Revises: 0007
"""

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 500

executions = sa.table("executions", sa.column("id", sa.String), sa.column("state", sa.Text))
execution_steps = sa.table(
    "execution_steps",
    sa.column("execution_id", sa.String),
    sa.column("step_id", sa.String),
    sa.column("state", sa.Text),
)


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=False)


def _executions(bind: sa.Connection) -> Iterator[list[tuple[str, str]]]:
    """(id, state) of every execution, a batch at a time (by id)."""
    after = ""
    while True:
        batch = [
            (row.id, row.state)
            for row in bind.execute(
                sa.select(executions.c.id, executions.c.state)
                .where(executions.c.id > after)
                .order_by(executions.c.id)
                .limit(BATCH)
            )
        ]
        if not batch:
            return
        yield batch
        after = batch[-1][0]


def upgrade() -> None:
    op.create_table(
        "execution_steps",
        sa.Column("execution_id", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(128), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "step_id", name="pk_execution_steps"),
    )
    bind = op.get_bind()
    for batch in _executions(bind):
        rows, headers = [], []
        for execution_id, encoded in batch:
            state = json.loads(encoded)
            steps = state.pop("steps", None)
            if steps is None:
                continue
            rows.extend(
                {"execution_id": execution_id, "step_id": step_id, "state": _encode(step)}
                for step_id, step in steps.items()
            )
            headers.append({"at": execution_id, "header": _encode(state)})
        if rows:
            bind.execute(sa.insert(execution_steps), rows)
        if headers:
            bind.execute(
                sa.update(executions)
                .where(executions.c.id == sa.bindparam("at"))
                .values(state=sa.bindparam("header")),
                headers,
            )


def downgrade() -> None:
    bind = op.get_bind()
    for batch in _executions(bind):
        ids = [execution_id for execution_id, _ in batch]
        steps: dict[str, dict[str, Any]] = {execution_id: {} for execution_id in ids}
        for row in bind.execute(
            sa.select(
                execution_steps.c.execution_id, execution_steps.c.step_id, execution_steps.c.state
            )
            .where(execution_steps.c.execution_id.in_(ids))
            .order_by(execution_steps.c.execution_id, execution_steps.c.step_id)
        ):
            steps[row.execution_id][row.step_id] = json.loads(row.state)
        bind.execute(
            sa.update(executions)
            .where(executions.c.id == sa.bindparam("at"))
            .values(state=sa.bindparam("whole")),
            [
                {
                    "at": execution_id,
                    "whole": _encode({**json.loads(encoded), "steps": steps[execution_id]}),
                }
                for execution_id, encoded in batch
            ],
        )
    op.drop_table("execution_steps")
