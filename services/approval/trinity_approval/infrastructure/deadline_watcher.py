"""The durable deadline watcher.

Deadlines live on the approval rows, so nothing is lost across a restart: at start
the first round fires every deadline that passed while the service was down.
Then it sleeps until the next deadline (at most ``poll_interval``, so approvals
created by another replica are seen) or until woken by a new approval.

With several replicas each due approval is timed out once: its row is locked with
``SKIP LOCKED`` on PostgreSQL (SQLite serializes writers), the handler re-checks
that it is still pending and due, and the version check refuses a stale write.
"""

from __future__ import annotations

import asyncio
import contextlib

from trinity_approval.application.service import ApprovalApplication
from trinity_platform.logs import get_logger
from trinity_platform.loops import raise_if_cancelled

_log = get_logger(__name__)

MIN_SLEEP = 0.02


class DeadlineWatcher:
    def __init__(
        self, app: ApprovalApplication, *, poll_interval: float = 1.0, batch_size: int = 100
    ) -> None:
        self._app = app
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._wake = asyncio.Event()
        self._failed = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Fire deadlines until cancelled (a runtime background task)."""
        while True:
            raise_if_cancelled()
            self._failed = False
            try:
                due = await self.fire_due()
            except Exception:
                _log.exception("deadline round failed")
                self._failed = True
                due = 0
            if due >= self._batch_size and not self._failed:
                continue
            await self._sleep(self._poll_interval if self._failed else await self._until_next())

    async def fire_due(self) -> int:
        """Time out every approval due now; returns how many were due."""
        due = await self._app.due_approvals(self._batch_size)
        for approval_id in due:
            raise_if_cancelled()
            try:
                fired = await self._app.fire_deadline(approval_id)
            except Exception:
                _log.exception("deadline of an approval failed", approval_id=approval_id)
                self._failed = True
                continue
            if fired is not None:
                _log.info(
                    "approval deadline passed",
                    approval_id=approval_id,
                    action=fired.on_timeout.value,
                    status=fired.status.value,
                )
        return len(due)

    async def _until_next(self) -> float:
        deadline = await self._app.next_deadline()
        if deadline is None:
            return self._poll_interval
        wait = (deadline - self._app.now()).total_seconds()
        # A due approval left over was held by another replica: look again shortly.
        return min(max(wait, MIN_SLEEP), self._poll_interval)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()
