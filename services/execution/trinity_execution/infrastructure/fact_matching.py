"""Facts are acted on only when they answer a request this service made (defence in depth).

The broker already limits who may publish which facts (``deploy/nats/``). Still, a
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

The match is read with the execution itself, in one statement (:func:`load_answered`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.application.ports import ExecutionRow
from trinity_execution.domain.commands import parse_request_key
from trinity_execution.domain.fanout import split_item_key
from trinity_execution.infrastructure.item_store import attach_items
from trinity_execution.infrastructure.repository import row_of
from trinity_execution.infrastructure.tables import dispatches, executions


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


def _candidates(claim: Claim) -> Any:
    """The dispatches that may be the request ``claim`` answers: of its execution and
    kind, answered with its id, or still being sent."""
    return and_(
        dispatches.c.execution_id == claim.execution_id,
        dispatches.c.kind == claim.kind,
        or_(dispatches.c.result_id == claim.answer_id, dispatches.c.status == "pending"),
    )


def _match(claim: Claim, rows: Sequence[tuple[str, str, str | None]]) -> str | Unmatched:
    """From the candidates (key, status, result id): the key of the answered request."""
    for key, status, result_id in rows:
        if status == "done" and result_id == claim.answer_id:
            return key if _same_step(claim, key) else Unmatched.NONE
    if any(status == "pending" and _same_step(claim, key) for key, status, _ in rows):
        return Unmatched.NOT_YET
    return Unmatched.NONE


async def load_answered(
    conn: AsyncConnection, claim: Claim
) -> tuple[ExecutionRow | None, str | Unmatched]:
    """The execution ``claim`` is about and the key of the request it answers, in one
    statement (the execution's row beside each candidate dispatch; usually one).
    No row when the claim matches no request (nothing to load for it)."""
    if not claim.answer_id:
        return None, Unmatched.NONE
    query = (
        select(
            executions,
            dispatches.c.key.label("answered_key"),
            dispatches.c.status.label("answered_status"),
            dispatches.c.result_id.label("answered_result_id"),
        )
        .select_from(executions.outerjoin(dispatches, _candidates(claim)))
        .where(executions.c.id == claim.execution_id)
    )
    rows: Sequence[Row[Any]] = (await conn.execute(query)).all()
    matched = _match(
        claim,
        [
            (row.answered_key, row.answered_status, row.answered_result_id)
            for row in rows
            if row.answered_key is not None
        ],
    )
    if not rows or not isinstance(matched, str):
        return None, matched
    found = row_of(rows[0]._mapping)
    await attach_items(conn, claim.execution_id, found.state)
    return found, matched
