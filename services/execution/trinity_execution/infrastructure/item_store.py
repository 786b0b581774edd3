"""The cold part of for_each steps (domain/items.py) in ``for_each_items``.

Writing: when a step starts, one row per item; when an item ends, its row gets the
result — each in the decision's transaction. Loading: beside each active for_each
step's hot state, the rows the decision may need (``wanted_items``, and the results
when ``wants_results`` or a full load was asked for) — never all of them per item, so
an item's cost does not grow with the number of items.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity_execution import domain as d
from trinity_execution.domain.items import ForEachState
from trinity_execution.infrastructure.tables import for_each_items


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


async def attach_items(
    conn: AsyncConnection, execution_id: str, active: Iterable[str], steps: dict[str, Any]
) -> None:
    """Put what a decision may need of each active for_each step's items and results
    beside its hot state (``loaded_items``, ``loaded_results``) in the compact form
    (``steps``: step id → compact form, or that as JSON text: decoded here when active)."""
    for step_id in active:
        stored = steps.get(step_id)
        if stored is None:
            continue
        if isinstance(stored, str):
            if '"for_each"' not in stored:
                continue  # not a for_each step: left to decode when read
            stored = steps[step_id] = json.loads(stored)
        hot = stored.get("for_each")
        if not hot or "total" not in hot:
            continue  # none, or stored inline before the split (already whole)
        each = ForEachState.from_dict(hot)
        where = and_(
            for_each_items.c.execution_id == execution_id,
            for_each_items.c.request == each.request,
        )
        wanted = None if each.wants_all else each.wanted_items()
        query = select(for_each_items.c.position, for_each_items.c.item).where(where)
        if wanted is not None:
            query = query.where(for_each_items.c.position.in_(wanted))
        rows = (await conn.execute(query)).all() if wanted != [] else []
        hot["loaded_items"] = [[row.position, json.loads(row.item)] for row in rows]
        if each.wants_results():
            ended = (
                await conn.execute(
                    select(
                        for_each_items.c.position,
                        for_each_items.c.output,
                        for_each_items.c.failed,
                    ).where(where, for_each_items.c.ended == 1)
                )
            ).all()
            hot["loaded_results"] = [
                [row.position, None if row.output is None else json.loads(row.output), row.failed]
                for row in ended
            ]


async def save_items(
    conn: AsyncConnection, execution_id: str, state: d.ExecutionState, changed: Iterable[str]
) -> None:
    """Write the items of steps that started and the results of items that ended (of the
    ``changed`` steps: a step whose items moved on was changed)."""
    for step_id in changed:
        each = state.steps[step_id].for_each
        if each is None:
            continue
        if not each.saved_items and each.total:
            await conn.execute(
                insert(for_each_items),
                [
                    {
                        "execution_id": execution_id,
                        "request": each.request,
                        "position": index,
                        "item": _encode(each.items[index]),
                        "ended": 0,
                        "failed": 0,
                    }
                    for index in range(each.total)
                ],
            )
        results = each.unsaved_results()
        if results:
            await conn.execute(
                update(for_each_items)
                .where(
                    for_each_items.c.execution_id == execution_id,
                    for_each_items.c.request == each.request,
                    for_each_items.c.position == bindparam("at"),
                )
                .values(ended=1, failed=bindparam("is_failed"), output=bindparam("result")),
                [
                    {
                        "at": index,
                        "is_failed": int(failed),
                        "result": None if failed else _encode(output),
                    }
                    for index, output, failed in results
                ],
            )
