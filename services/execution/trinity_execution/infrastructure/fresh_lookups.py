"""Concurrent look-ups of one key share a call, and none is answered from before it asked.

A plain cache (or joining a call already in flight) could answer a caller with what
was true before it called: a trigger sent right after a new version was published
would start the old one. :class:`FreshLookups` lets a caller join only a call that
has not started yet: while one call of a key runs, the callers that arrive wait
together for the next, which starts when the running one ends. So under load one
call answers many callers, and each caller's answer was read after it asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _NextCall(Generic[V]):
    """The call of a key that has not started yet: its answer, and how many wait for it."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        # Nobody may be left to read a failure: mark it retrieved, never logged as lost.
        self.answer.add_done_callback(_retrieve)
        self.callers = 0


class FreshLookups(Generic[K, V]):
    """``await get(key)``: ``lookup(key)`` from a call that started after ``get`` was called."""

    def __init__(self, lookup: Callable[[K], Awaitable[V]]) -> None:
        self._lookup = lookup
        self._next: dict[K, _NextCall[V]] = {}
        """Per key, the call that starts when the running one ends (or at once)."""
        self._running: dict[K, asyncio.Task[None]] = {}
        self.calls = 0
        """Calls of ``lookup`` made so far."""

    async def get(self, key: K) -> V:
        joined = self._next.get(key)
        if joined is None:
            joined = self._next[key] = _NextCall()
            if key not in self._running:
                self._running[key] = asyncio.get_running_loop().create_task(self._calls(key))
        joined.callers += 1
        # Shielded: a caller that gives up must not cancel the others' answer.
        return await asyncio.shield(joined.answer)

    def waiting(self, key: K) -> int:
        """How many callers of ``key`` wait for a call that has not started yet."""
        joined = self._next.get(key)
        return 0 if joined is None else joined.callers

    async def _calls(self, key: K) -> None:
        """Call ``lookup(key)`` for each group of callers, one call at a time."""
        try:
            while (joined := self._next.pop(key, None)) is not None:
                # Taken before the call starts: whoever comes now waits for the next one.
                self.calls += 1
                try:
                    value = await self._lookup(key)
                except Exception as error:
                    joined.answer.set_exception(error)
                except BaseException:
                    joined.answer.cancel()
                    raise
                else:
                    joined.answer.set_result(value)
        finally:
            del self._running[key]
            left = self._next.pop(key, None)
            if left is not None:  # only when cancelled (shutdown): nobody will call for them
                left.answer.cancel()


def _retrieve(answer: asyncio.Future[Any]) -> None:
    if not answer.cancelled():
        answer.exception()


__all__ = ["FreshLookups"]
