"""Finds work whose executor stopped heartbeating and re-offers it (or times it out)."""

from __future__ import annotations

import asyncio

from trinity_platform.logs import get_logger
from trinity_work.application.handlers import WorkHandlers

_log = get_logger(__name__)

BATCH = 100


async def watch_leases(handlers: WorkHandlers, interval: float) -> None:
    """Run forever: every ``interval`` seconds, expire the leases that ran out.

    Replicas may all run it: on PostgreSQL each claims rows with SKIP LOCKED, and the
    aggregate's version guards the rest.
    """
    while True:
        changed = 0
        try:
            changed = await handlers.expire_leases(BATCH)
            if changed:
                _log.info("expired leases", count=changed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.warning("lease check failed", error=repr(exc))
        await asyncio.sleep(0 if changed >= BATCH else interval)
