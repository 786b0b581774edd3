"""Bounded admission: new work is refused while the work admitted and not yet done
is at its bound (ARCHITECTURE.md invariant 12).

Without it a service accepts work faster than the suite completes it, and every
queue behind it (dispatches, the work queue, the facts waiting in the outbox)
grows without limit while nothing finishes. With it the excess is answered
RESOURCE_EXHAUSTED with ``google.rpc.RetryInfo``: the caller retries later with the
same request id, and what was admitted completes with bounded latency.

The count of work in progress comes from the database (so every replica sees what
all of them admitted), at most every ``refresh`` seconds; between two counts the
replica adds what it admitted itself, so a burst cannot overshoot by more than what
other replicas admit in one ``refresh``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from trinity_platform.errors import ResourceExhausted

ADMISSION_LIMIT = "ADMISSION_LIMIT"


class AdmissionLimit:
    """``await admit()`` before accepting new work; ``bound`` 0 admits everything."""

    def __init__(
        self,
        bound: int,
        count_in_progress: Callable[[], Awaitable[int]],
        *,
        what: str,
        refresh: float = 0.5,
        retry_after: float = 1.0,
    ) -> None:
        if bound < 0:
            raise ValueError("the admission bound must be 0 (none) or positive")
        self.bound = bound
        self._count_in_progress = count_in_progress
        self._what = what
        self._refresh = refresh
        self._retry_after = retry_after
        self._counted = 0
        self._admitted_since = 0
        self._counted_at: float | None = None
        self._lock = asyncio.Lock()
        self.refused = 0

    async def in_progress(self) -> int:
        """The work in progress as this replica sees it (recounted when stale)."""
        loop = asyncio.get_running_loop()
        if self._counted_at is None or loop.time() - self._counted_at >= self._refresh:
            async with self._lock:
                if self._counted_at is None or loop.time() - self._counted_at >= self._refresh:
                    self._counted = await self._count_in_progress()
                    self._admitted_since = 0
                    self._counted_at = loop.time()
        return self._counted + self._admitted_since

    async def admit(self) -> None:
        """Return when there is room (and count this admission); raise
        :class:`ResourceExhausted` (reason ``ADMISSION_LIMIT``, with a retry delay)."""
        if self.bound == 0:
            return
        in_progress = await self.in_progress()
        if in_progress >= self.bound:
            self.refused += 1
            raise ResourceExhausted(
                f"{in_progress} {self._what} are in progress, the bound is {self.bound}; "
                "retry later with the same request id",
                reason=ADMISSION_LIMIT,
                metadata={"in_progress": str(in_progress), "bound": str(self.bound)},
                retry_after=self._retry_after,
            )
        self._admitted_since += 1


__all__ = ["ADMISSION_LIMIT", "AdmissionLimit"]
