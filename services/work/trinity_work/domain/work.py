"""The WorkRequest aggregate: one request for work, its deliveries, lease and outcome.

Life cycle::

    requested ──start──► started ──complete──► completed
        ▲                  │  ├────fail──────► failed
        │   lease expired, │  └─lease expired, last delivery──► timed_out
        └──deliveries left─┘
    requested / started ──cancel──► cancelled

Every state change appends a domain event to ``events``; the unit of work turns
them into outbox rows in the same transaction. ``version`` is the optimistic
concurrency token (the repository bumps it on save).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from trinity_work.domain import events as ev
from trinity_work.domain.errors import (
    StaleDelivery,
    WorkFinished,
    WorkLeasedElsewhere,
    WorkNotLeased,
)
from trinity_work.domain.lease import lease_duration
from trinity_work.domain.model import (
    Failure,
    FailureCode,
    Payload,
    StepRef,
    WorkKind,
    WorkResult,
    WorkStatus,
    kind_of,
)


@dataclass
class WorkRequest:
    id: str
    request_id: str
    payload: Payload
    correlation: StepRef
    timeout: timedelta
    max_deliveries: int
    created_at: datetime
    status: WorkStatus = WorkStatus.REQUESTED
    delivery: int = 1
    releases: int = 0
    executor_id: str = ""
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    result: WorkResult | None = None
    error: Failure | None = None
    cancel_requested: bool = False
    cancel_reason: str = ""
    progress: str = ""
    version: int = 0
    events: list[ev.WorkEvent] = field(default_factory=list, compare=False, repr=False)

    # ------------------------------------------------------------------ creation

    @classmethod
    def request(
        cls,
        *,
        work_id: str,
        request_id: str,
        payload: Payload,
        correlation: StepRef,
        timeout: timedelta,
        max_deliveries: int,
        now: datetime,
    ) -> WorkRequest:
        work = cls(
            id=work_id,
            request_id=request_id,
            payload=payload,
            correlation=correlation,
            timeout=timeout,
            max_deliveries=max_deliveries,
            created_at=now,
        )
        work.events.append(ev.WorkRequested(now))
        work.events.append(ev.ExecutionRequested(work.delivery, now))
        return work

    @property
    def kind(self) -> WorkKind:
        return kind_of(self.payload)

    # ------------------------------------------------------------------ guards

    def check_not_finished(self) -> None:
        if self.status.is_final:
            raise WorkFinished(
                f"work {self.id} is already {self.status.value}",
                metadata={"work_id": self.id, "status": self.status.value},
            )

    def check_leased_by(self, executor_id: str) -> None:
        """The caller must be the executor holding the lease of started work."""
        if self.status is not WorkStatus.STARTED or self.executor_id != executor_id:
            raise WorkNotLeased(
                f"executor {executor_id!r} does not hold the lease of work {self.id}",
                metadata={"work_id": self.id, "status": self.status.value},
            )

    def lease_expired(self, now: datetime) -> bool:
        return (
            self.status is WorkStatus.STARTED
            and self.lease_expires_at is not None
            and self.lease_expires_at <= now
        )

    # ------------------------------------------------------------------ commands

    def start(
        self, executor_id: str, delivery: int, lease: timedelta | None, now: datetime
    ) -> None:
        """An executor takes ``delivery`` (0: the current one) and gets a lease.

        Taking the same delivery again (a retried call) only renews the lease.
        """
        self.check_not_finished()
        delivery = delivery or self.delivery
        if delivery != self.delivery:
            raise StaleDelivery(
                f"delivery {delivery} of work {self.id} is stale; the current one is "
                f"{self.delivery}",
                metadata={"work_id": self.id, "current_delivery": str(self.delivery)},
            )
        if self.status is WorkStatus.STARTED:
            if self.executor_id != executor_id:
                raise WorkLeasedElsewhere(
                    f"work {self.id} is leased by another executor",
                    metadata={"work_id": self.id},
                )
            self.lease_expires_at = now + lease_duration(lease)
            return
        self.status = WorkStatus.STARTED
        self.executor_id = executor_id
        self.lease_expires_at = now + lease_duration(lease)
        if self.started_at is None:
            self.started_at = now
        self.events.append(ev.WorkStarted(executor_id, self.delivery, now))

    def heartbeat(
        self, executor_id: str, lease: timedelta | None, progress: str, now: datetime
    ) -> bool:
        """Extend the lease; returns True when the executor must stop (cancelled)."""
        if self.status is WorkStatus.CANCELLED and self.executor_id == executor_id:
            return True
        self.check_leased_by(executor_id)
        self.lease_expires_at = now + lease_duration(lease)
        if progress:
            self.progress = progress
        return False

    def complete(self, executor_id: str, result: WorkResult, now: datetime) -> None:
        self.check_not_finished()
        self.check_leased_by(executor_id)
        self.status = WorkStatus.COMPLETED
        self.result = result.with_structured_output()
        self._end(now)
        self.events.append(ev.WorkCompleted(self.result, now))

    def fail(self, executor_id: str, failure: Failure, now: datetime) -> None:
        self.check_not_finished()
        self.check_leased_by(executor_id)
        self.status = WorkStatus.FAILED
        self.error = failure
        self._end(now)
        self.events.append(ev.WorkFailed(failure, now))

    def cancel(self, reason: str, now: datetime) -> bool:
        """Cancel unfinished work; False (and nothing changes) when it already was cancelled.

        The lease holder keeps ``executor_id`` so that its next heartbeat learns it.
        """
        if self.status is WorkStatus.CANCELLED:
            return False
        self.check_not_finished()
        self.status = WorkStatus.CANCELLED
        self.cancel_requested = True
        self.cancel_reason = reason
        self.ended_at = now
        self.events.append(ev.WorkCancelled(reason, now))
        return True

    def release(self, executor_id: str, now: datetime) -> None:
        """The lease holder gives the work back (it is shutting down): offer it again now.

        A release does not count against ``max_deliveries``.
        """
        self.check_not_finished()
        self.check_leased_by(executor_id)
        self.releases += 1
        self._reoffer(now)

    def expire_lease(self, now: datetime) -> bool:
        """The lease ran out (the executor is gone): offer the work again, or time it out
        after its last delivery. False when the lease is still live."""
        if not self.lease_expired(now):
            return False
        if self.delivery - self.releases < self.max_deliveries:
            self._reoffer(now)
            return True
        failure = Failure(
            code=FailureCode.TIMEOUT.value,
            message=(
                f"the lease of work {self.id} expired on each of its "
                f"{self.max_deliveries} deliveries"
            ),
            details={"deliveries": str(self.delivery), "executor_id": self.executor_id},
        )
        self.status = WorkStatus.TIMED_OUT
        self.error = failure
        self._end(now)
        self.events.append(ev.WorkFailed(failure, now))
        return True

    # ------------------------------------------------------------------ internals

    def _reoffer(self, now: datetime) -> None:
        self.status = WorkStatus.REQUESTED
        self.delivery += 1
        self.executor_id = ""
        self.lease_expires_at = None
        self.events.append(ev.ExecutionRequested(self.delivery, now))

    def _end(self, now: datetime) -> None:
        self.ended_at = now
        self.lease_expires_at = None
