"""Facts are acted on only when they answer a request this service made (defence in depth).

The broker already limits who may publish which facts (``deploy/k8s/base/nats/``). Still, a
work or approval fact continues a step only when:

- its ``ce-source`` is the service that owns it (work facts from the work service,
  approval facts from the approval service), and
- the work id or approval id it reports is the one the owning service gave to this
  execution's request for that very step, iteration (and, for work, attempt): the
  ``dispatches`` row the dispatcher recorded when the request was accepted. A for_each
  item's request has its own key (``…/item/<index>``) and its own work id, so a fact
  is matched to one item attempt only, and the engine continues that item only while
  that very request is the item's outstanding one.

The matched request's key goes into the engine event, and the engine checks it is
the step's outstanding request. A fact that arrives before the dispatcher recorded
the accepted request (the answer raced the reply) is retried shortly.

The matches of a batch of facts are read with their executions (and their steps), in one statement
(:func:`load_answered`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.application.ports import ExecutionRow
from trinity_execution.domain.commands import parse_request_key
from trinity_execution.domain.fanout import split_item_key
from trinity_execution.infrastructure.repository import steps_column, with_steps
from trinity_execution.infrastructure.tables import dispatches, executions
from trinity_platform.statements import PerDialect


class Unmatched(enum.Enum):
    NOT_YET = "not_yet"  # a request for that step is still being sent: ask again later
    NONE = "none"  # no request of this execution was answered with that id


@dataclass(frozen=True)
class Claim:
    """What a fact says it answers."""

    execution_id: str
    kind: str  # the dispatch kind of the request (request_work, request_approval)
    answer_id: str  # the work id or approval id in the fact
    step_id: str
    iteration: int
    attempt: int | None  # None: the fact does not say (approvals)


def _same_step(claim: Claim, key: str) -> bool:
    item = split_item_key(key)  # a for_each item's request: its step's key, then the item
    parsed = parse_request_key(claim.execution_id, key if item is None else item[0])
    if parsed is None:
        return False
    step_id, iteration, attempt = parsed
    return (
        step_id == claim.step_id
        and iteration == claim.iteration
        and (claim.attempt is None or attempt == claim.attempt)
    )


# The executions a batch of claims is about, each beside the dispatches that may be the
# requests the claims answer: of its kinds, answered with one of their ids, or still
# being sent (usually one per execution). Built once: the lists go as parameters.
def _answered(dialect: str) -> Any:
    return (
        select(
            executions,
            steps_column(dialect),
            dispatches.c.kind.label("answered_kind"),
            dispatches.c.key.label("answered_key"),
            dispatches.c.status.label("answered_status"),
            dispatches.c.result_id.label("answered_result_id"),
        )
        .select_from(
            executions.outerjoin(
                dispatches,
                and_(
                    dispatches.c.execution_id == executions.c.id,
                    dispatches.c.kind.in_(bindparam("kinds", expanding=True)),
                    or_(
                        dispatches.c.result_id.in_(bindparam("answer_ids", expanding=True)),
                        dispatches.c.status == "pending",
                    ),
                ),
            )
        )
        .where(executions.c.id.in_(bindparam("execution_ids", expanding=True)))
    )


_ANSWERED = PerDialect(_answered)


def _match(claim: Claim, rows: Sequence[tuple[str, str, str | None]]) -> str | Unmatched:
    """From the candidates (key, status, result id): the key of the answered request."""
    for key, status, result_id in rows:
        if status == "done" and result_id == claim.answer_id:
            return key if _same_step(claim, key) else Unmatched.NONE
    if any(status == "pending" and _same_step(claim, key) for key, status, _ in rows):
        return Unmatched.NOT_YET
    return Unmatched.NONE


async def load_answered(
    conn: AsyncConnection, claims: Sequence[Claim]
) -> tuple[list[ExecutionRow | None], list[str | Unmatched]]:
    """For each of ``claims`` (a batch of facts): the execution it is about and the key
    of the request it answers, in one statement whatever the batch's size. No row for
    a claim that matches no request (nothing to load for it)."""
    asked = [claim for claim in claims if claim.answer_id]
    found: dict[str, RowMapping] = {}  # an execution's row (the first of its candidates)
    candidates: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
    if asked:
        result = await conn.execute(
            _ANSWERED(conn),
            {
                "execution_ids": sorted({claim.execution_id for claim in asked}),
                "kinds": sorted({claim.kind for claim in asked}),
                "answer_ids": sorted({claim.answer_id for claim in asked}),
            },
        )
        for mapping in result.mappings():
            execution_id = mapping["id"]
            found.setdefault(execution_id, mapping)
            if mapping["answered_key"] is not None:
                candidates.setdefault((execution_id, mapping["answered_kind"]), []).append(
                    (
                        mapping["answered_key"],
                        mapping["answered_status"],
                        mapping["answered_result_id"],
                    )
                )
    matched: list[str | Unmatched] = []
    for claim in claims:
        if not claim.answer_id or claim.execution_id not in found:
            matched.append(Unmatched.NONE)
            continue
        mine = [
            (key, status, result_id)
            for key, status, result_id in candidates.get((claim.execution_id, claim.kind), ())
            if result_id == claim.answer_id or status == "pending"
        ]
        matched.append(_match(claim, mine))
    loaded: dict[str, ExecutionRow] = {}
    rows: list[ExecutionRow | None] = []
    for claim, match in zip(claims, matched, strict=True):
        if not isinstance(match, str):
            rows.append(None)
            continue
        if claim.execution_id not in loaded:
            row = await with_steps(conn, found[claim.execution_id])
            loaded[row.id] = row
        rows.append(loaded[claim.execution_id])
    return rows, matched
