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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_execution.domain.commands import parse_request_key
from trinity_execution.domain.fanout import split_item_key
from trinity_execution.infrastructure.tables import dispatches
from trinity_platform.db import read_only


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


async def match_request(engine: AsyncEngine, claim: Claim) -> str | Unmatched:
    """The key of the request ``claim`` answers, or why there is none."""
    if not claim.answer_id:
        return Unmatched.NONE
    async with read_only(engine) as conn:
        rows = (
            await conn.execute(
                select(dispatches.c.key, dispatches.c.status, dispatches.c.result_id).where(
                    dispatches.c.execution_id == claim.execution_id,
                    dispatches.c.kind == claim.kind,
                    or_(
                        dispatches.c.result_id == claim.answer_id,
                        dispatches.c.status == "pending",
                    ),
                )
            )
        ).all()
    for row in rows:
        if row.status == "done" and row.result_id == claim.answer_id:
            return row.key if _same_step(claim, row.key) else Unmatched.NONE
    if any(row.status == "pending" and _same_step(claim, row.key) for row in rows):
        return Unmatched.NOT_YET
    return Unmatched.NONE
