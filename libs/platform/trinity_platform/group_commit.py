"""Group commit: the writes handed in while one runs go together in the next transaction.

Under load a service's writes take turns (SQLite's one writer, a hot row on
PostgreSQL); each pays for its own BEGIN and COMMIT and wakes the outbox relay once.
:class:`GroupCommit` queues what callers hand in while a write runs and gives the
whole queue to the next write: one transaction per turn under load, not one per
call; a lone call is written at once, as before.

The write answers each item on its own (a value, or :class:`Refused` with the
error that item alone met), so one caller's refusal is not another's; an error the
write raises (the commit failed) is every caller's of that group. Each caller
returns once its own item is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741 - an item handed in
R = TypeVar("R")


@dataclass(frozen=True)
class Refused:
    """One item's own failure: its caller gets ``error``; the group's others are unaffected."""

    error: Exception


class GroupCommit(Generic[I, R]):
    """``await submit(item)`` returns ``item``'s answer once its group is committed.

    ``write(items)`` writes a group in one transaction and returns one answer per
    item, in order: the item's result or :class:`Refused`.
    """

    def __init__(self, write: Callable[[list[I]], Awaitable[Sequence[R | Refused]]]) -> None:
        self._write = write
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Items handed in that no write has taken yet."""
        return sum(1 for _, answer in self._queue if not answer.done())

    async def submit(self, item: I) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, answer))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        while self._queue:
            # A caller that gave up (cancelled) before its turn is not written.
            group = [(item, answer) for item, answer in self._queue if not answer.done()]
            self._queue = []
            if not group:
                continue
            try:
                answers = await self._write([item for item, _ in group])
                if len(answers) != len(group):
                    raise RuntimeError(f"{len(answers)} answers for {len(group)} items")
            except BaseException as error:
                for _, answer in group:
                    if answer.done():
                        continue
                    if isinstance(error, Exception):
                        answer.set_exception(error)
                    else:
                        answer.cancel()
                if not isinstance(error, Exception):
                    raise
                continue
            for (_, answer), outcome in zip(group, answers, strict=False):
                if answer.done():
                    continue
                if isinstance(outcome, Refused):
                    answer.set_exception(outcome.error)
                else:
                    answer.set_result(outcome)


__all__ = ["GroupCommit", "Refused"]
