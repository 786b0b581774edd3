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

A batch of facts is matched in one statement, and the executions they answer are read
in one more (:func:`load_answered`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution.application.ports import ExecutionRow
from trinity_execution.domain.commands import parse_request_key
from trinity_execution.domain.fanout import split_item_key
from trinity_execution.infrastructure.repository import load_executions
from trinity_execution.infrastructure.tables import dispatches


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


# The dispatches that may be the requests a batch of claims answers: of their executions
# and kinds, answered with one of their ids, or still being sent (built once).
_CANDIDATES = select(
    dispatches.c.execution_id,
    dispatches.c.kind,
    dispatches.c.key,
    dispatches.c.status,
    dispatches.c.result_id,
).where(
    dispatches.c.execution_id.in_(bindparam("execution_ids", expanding=True)),
    dispatches.c.kind.in_(bindparam("kinds", expanding=True)),
    or_(
        dispatches.c.result_id.in_(bindparam("answer_ids", expanding=True)),
        dispatches.c.status == "pending",
    ),
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
    conn: AsyncConnection, claims: Sequence[Claim]
) -> tuple[list[ExecutionRow | None], list[str | Unmatched]]:
    """For each of ``claims`` (a batch of facts): the execution it is about and the key
    of the request it answers, in two statements whatever the batch's size (the
    candidate dispatches, then the executions some claim matched). No row for a claim
    that matches no request (nothing to load for it)."""
    asked = [claim for claim in claims if claim.answer_id]
    candidates: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
    if asked:
        found = await conn.execute(
            _CANDIDATES,
            {
                "execution_ids": sorted({claim.execution_id for claim in asked}),
                "kinds": sorted({claim.kind for claim in asked}),
                "answer_ids": sorted({claim.answer_id for claim in asked}),
            },
        )
        for execution_id, kind, key, status, result_id in found:
            candidates.setdefault((execution_id, kind), []).append((key, status, result_id))
    matched: list[str | Unmatched] = []
    for claim in claims:
        rows = [
            (key, status, result_id)
            for key, status, result_id in candidates.get((claim.execution_id, claim.kind), ())
            if result_id == claim.answer_id or status == "pending"
        ]
        matched.append(_match(claim, rows) if claim.answer_id else Unmatched.NONE)
    wanted = {
        claim.execution_id for claim, m in zip(claims, matched, strict=True) if isinstance(m, str)
    }
    executions = await load_executions(conn, wanted)
    rows_of: list[ExecutionRow | None] = []
    for claim, m in zip(claims, matched, strict=True):
        row = executions.get(claim.execution_id) if isinstance(m, str) else None
        rows_of.append(row)
    # An execution that is gone (never: executions are not deleted) matches nothing.
    matched = [
        m if row is not None or not isinstance(m, str) else Unmatched.NONE
        for m, row in zip(matched, rows_of, strict=True)
    ]
    return rows_of, matched
