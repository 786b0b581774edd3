"""Work requests as the command dispatcher sends them to the work service in batches.

Execution (agent tasks, tool runs) and approval (notifications) both keep RequestWork
commands in their command outbox; a batch of those rows becomes one RequestWorkBatch
call, each item the row's own request with its dispatch span's traceparent.
"""

from __future__ import annotations

from collections.abc import Sequence

from trinity.process.work.v1 import work_service_pb2 as work_api
from trinity_platform.dispatch import Dispatch


def request_work_batch(rows: Sequence[Dispatch]) -> work_api.RequestWorkBatchRequest:
    return work_api.RequestWorkBatchRequest(
        items=[
            work_api.RequestWorkBatchItem(
                request=work_api.RequestWorkRequest.FromString(row.payload),
                traceparent=row.traceparent or "",
            )
            for row in rows
        ]
    )
