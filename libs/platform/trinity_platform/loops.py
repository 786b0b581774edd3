"""Background loops that stop when asked, even when asyncio lost the request.

On Python 3.11, ``asyncio.wait_for(inner, …)`` returns the inner result, and drops
the cancellation, when the task is cancelled in the same loop iteration that the
inner awaitable completes (e.g. a lock granted by the platform's SQLite gate). A
loop that never checks would then run forever and ``ServiceRuntime.stop()`` would
wait for it. ``Task.cancelling()`` still counts the request, so loops call
:func:`raise_if_cancelled` between rounds.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
