"""The work service's metrics, counted from the events a transaction committed."""

from __future__ import annotations

from trinity_platform import metrics
from trinity_work.domain import events as ev
from trinity_work.domain.work import WorkRequest


def observe_events(work: WorkRequest, events: list[ev.WorkEvent]) -> None:
    kind = work.kind.value
    for event in events:
        if isinstance(event, ev.WorkStarted):
            wait = (event.at - work.created_at).total_seconds()
            metrics.WORK_QUEUE_WAIT.labels(kind).observe(max(wait, 0.0))
        elif isinstance(event, ev.WorkCompleted):
            metrics.WORK_FINISHED.labels(kind, "completed").inc()
        elif isinstance(event, ev.WorkFailed):
            metrics.WORK_FINISHED.labels(kind, "failed").inc()
        elif isinstance(event, ev.WorkCancelled):
            metrics.WORK_FINISHED.labels(kind, "cancelled").inc()
