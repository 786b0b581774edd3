"""The outbox relay: publishes committed outbox rows to JetStream, in order, exactly once.

How it keeps its promises:

* **Nothing lost.** A row is marked published only after JetStream acknowledged it;
  until then it stays in the table and is retried (capped exponential backoff)
  for as long as NATS is down.
* **Nothing twice in the stream.** Every message carries ``Nats-Msg-Id`` = ``ce-id``;
  a republished message inside the stream's duplicate window is dropped by the
  server (``PubAck.duplicate``). Consumers dedupe by message id anyway (inbox).
* **In order, fast.** A batch (default 500 rows, id order) is published pipelined
  (all publishes in flight, then the acks are collected). The batch stops at its
  first failed ack; only the acknowledged prefix is marked published. So that a
  later message of the batch cannot overtake a lost earlier one (e.g. written to a
  dying connection while the later one waited in the reconnect buffer), each
  message after the first one of its stream in the batch carries
  ``Nats-Expected-Last-Msg-Id`` = the previous message of that stream: the server
  rejects it unless its predecessor is stored. (The stream of a subject is learned
  from the acks; until it is known, no expectation is set.)
* **Not held up by the acks of earlier facts.** On SQLite the running relay does not
  wait for a batch's acks before it publishes the next: the acks of each batch are
  collected in the background, and a row is left out of the selection while its
  publish is in flight. At most ``BATCHES_IN_FLIGHT`` batches are: the commits of
  meanwhile gather until an ack arrives (one select for many). The chain of
  ``Nats-Expected-Last-Msg-Id`` runs on across the batches in flight, so a message
  published after one the server lost or rejected is rejected too; after any failure
  the relay waits until every batch in flight has settled, then selects again (a row
  of a subject whose stream is not known yet is not published while others are in
  flight).
* **Fast after a commit.** On SQLite the rows JetStream acknowledged are marked
  published by a write of their own, in the background: the next batch is selected
  and published while that write waits its turn for the single writer (the rows
  being marked are left out of the selection), so a fact is not held up behind the
  marking of the facts before it. The acks that arrive while one marking write runs
  go together in the next. A marking that fails leaves its rows pending: they are
  published again, and JetStream drops them as duplicates.
* **Replicas.** On PostgreSQL each batch runs in a transaction holding
  ``pg_try_advisory_xact_lock``, so relays of several replicas never publish
  interleaved; a relay that does not get the lock retries shortly.
  Rows are published in id order; ids are assigned at insert, so rows of
  concurrent transactions may be published in commit order rather than id order,
  while the rows of one aggregate (serialized by its version) stay in order.
* **Bounded.** Rows published more than ``retention`` seconds ago are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client as NATS
from nats.js.api import PubAck
from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform import metrics
from trinity_platform.db import OUTBOX, is_postgres, read_only
from trinity_platform.envelope import build_headers
from trinity_platform.group_commit import GroupCommit
from trinity_platform.jetstream_acks import AckCollector
from trinity_platform.logs import get_logger
from trinity_platform.outbox import OutboxSignal

_log = get_logger(__name__)

EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
RELAY_LOCK_KEY = 0x7472696E_72656C  # "trinrel"
# Batches in flight at once: a fact committed while one is in flight goes out at once;
# beyond that, commits gather until an ack arrives (one select for many, not one each).
BATCHES_IN_FLIGHT = 2


class RelayError(Exception):
    """A batch stopped before its end; the rest stays pending and is retried."""


class _LockBusy(Exception):
    pass


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    failed_batches: int = 0
    pruned: int = 0


class OutboxRelay:
    """Publishes the outbox of one service. ``start()`` runs it in the background."""

    def __init__(
        self,
        engine: AsyncEngine,
        nc: NATS,
        source: str,
        *,
        signal: OutboxSignal | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        ack_timeout: float = 5.0,
        max_backoff: float = 5.0,
        retention: float | None = 600.0,
        prune_interval: float = 60.0,
        lock_key: int = RELAY_LOCK_KEY,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._engine = engine
        self._nc = nc
        self._acks = AckCollector(nc)
        self._source = source
        self.signal = signal or OutboxSignal()
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._ack_timeout = ack_timeout
        self._max_backoff = max_backoff
        self._retention = retention
        self._prune_interval = prune_interval
        self._lock_key = lock_key
        self._task: asyncio.Task[None] | None = None
        self._stop_event = asyncio.Event()
        self._local_lock = asyncio.Lock()
        self._busy = False
        self._stream_of_subject: dict[str, str] = {}
        # SQLite: acknowledged rows whose published_at is being written (see _mark_later)
        self._marking: set[int] = set()
        self._marker: GroupCommit[list[int], None] = GroupCommit(self._mark_published)
        self._mark_tasks: set[asyncio.Task[None]] = set()
        # SQLite, running: rows published whose acks are awaited (see _pump)
        self._in_flight: set[int] = set()
        self._collectors: set[asyncio.Task[None]] = set()
        self._chain: dict[str, str] = {}  # stream -> message id last published to it
        self._pipeline_error: BaseException | None = None
        self._deferred = False  # rows left for the next ack (BATCHES_IN_FLIGHT reached)
        self.stats = RelayStats()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("relay already started")
        self._stop_event.clear()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-relay")

    def wake(self) -> None:
        """Publish now instead of at the next poll (call after a commit)."""
        self.signal.notify()

    async def stop(self, flush: bool = True, grace: float = 10.0) -> None:
        """Stop the loop; with ``flush``, publish what is pending (bounded by ``grace`` s)."""
        self._stop_event.set()
        self.signal.notify()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(task, grace)
            except TimeoutError:
                _log.warning("outbox relay did not stop in time; cancelled")
        try:
            await asyncio.wait_for(self._settle(), grace)
        except TimeoutError:
            _log.warning("outbox acks at stop incomplete; those rows are published again")
        if flush and self._nc.is_connected:
            try:
                await asyncio.wait_for(self.drain_once(), grace)
            except Exception as exc:
                _log.warning("outbox flush at stop incomplete", error=repr(exc))
        try:
            await asyncio.wait_for(self._marks_written(), grace)
        except TimeoutError:
            _log.warning("outbox marking at stop incomplete; those rows are published again")

    # ------------------------------------------------------------------ work

    async def drain_once(self) -> int:
        """Publish pending rows batch after batch until none is left, and mark them.

        Returns how many were published; raises :class:`RelayError` when a batch
        stopped early (the acknowledged prefix stays marked).
        """
        try:
            return await self._drain()
        finally:
            await self._marks_written()

    async def _drain(self) -> int:
        """:meth:`drain_once` without waiting for the marking of the last rows."""
        total = 0
        self._busy = False
        async with self._local_lock:
            await self._settle()  # what the running relay has in flight goes first
            self._take_pipeline_error()
            while True:
                try:
                    selected, published = await self._drain_batch()
                except _LockBusy:
                    self._busy = True
                    return total
                total += published
                if selected < self._batch_size:
                    return total

    async def prune(self, older_than: float | None = None) -> int:
        """Delete rows published more than ``older_than`` seconds ago (default: retention)."""
        age = self._retention if older_than is None else older_than
        if age is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(seconds=age)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(OUTBOX).where(
                    OUTBOX.c.published_at.is_not(None), OUTBOX.c.published_at < cutoff
                )
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        self.stats.pruned += deleted
        return deleted

    async def sample_backlog(self) -> None:
        metrics.OUTBOX_BACKLOG.set(await self.pending())

    async def pending(self) -> int:
        """Rows not yet published."""
        async with self._engine.connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(OUTBOX).where(OUTBOX.c.published_at.is_(None))
            )
            await conn.rollback()
        return int(count or 0)

    # ------------------------------------------------------------------ internals

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        failures = 0
        next_prune = loop.time()
        pipelined = not is_postgres(self._engine)
        while not self._stop_event.is_set():
            try:
                if pipelined:
                    await self._pump()
                else:
                    await self._drain()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await self._settle()
                failures += 1
                self.stats.failed_batches += 1
                metrics.OUTBOX_FAILED_BATCHES.inc()
                log = _log.warning if failures in (1, 10) or failures % 100 == 0 else _log.debug
                log("outbox publish failed; backlog kept", error=repr(exc), attempt=failures)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if failures:
                _log.info("outbox publishing recovered", failed_attempts=failures)
                failures = 0
                backoff = 0.05
            if self._retention is not None and loop.time() >= next_prune:
                next_prune = loop.time() + self._prune_interval
                try:
                    await self.prune()
                except Exception as exc:
                    _log.warning("outbox prune failed", error=repr(exc))
            if self._stop_event.is_set():
                break
            idle = min(0.05, self._poll_interval) if self._busy else self._poll_interval
            await self.signal.wait(idle)

    async def _pump(self) -> None:
        """SQLite, running: publish the pending rows not in flight; their acks are
        collected in the background (:meth:`_collect_batch`)."""
        async with self._local_lock:
            while True:
                self._take_pipeline_error()
                if not self._nc.is_connected:
                    raise RelayError("NATS is not connected")
                if sum(not task.done() for task in self._collectors) >= BATCHES_IN_FLIGHT:
                    self._deferred = True  # the next ack wakes the relay
                    return
                if len(self._in_flight) >= self._batch_size:
                    await self._settle()  # bounded: a batch's worth in flight at most
                    continue
                if len(self._marking) >= self._batch_size:
                    await self._marks_written()  # bounded: a batch's worth waits at most
                # Taken before the select: a row whose marking commits meanwhile may
                # still be read as pending, and must not be published again.
                excluded = self._marking | self._in_flight
                async with read_only(self._engine) as conn:  # not in the writers' queue
                    rows = await self._select(conn, extra=len(excluded))
                    await conn.rollback()
                rows = [row for row in rows if row.id not in excluded][: self._batch_size]
                if not rows:
                    return
                if self._collectors and any(
                    row.subject not in self._stream_of_subject for row in rows
                ):
                    await self._settle()  # no chain without the stream: none in flight
                    continue
                futures, error = await self._send(rows, self._chain)
                self._in_flight.update(row.id for row in rows)
                task = asyncio.get_running_loop().create_task(
                    self._collect_batch(rows, futures, error)
                )
                self._collectors.add(task)
                task.add_done_callback(self._collectors.discard)
                if error is not None or len(rows) < self._batch_size:
                    return

    async def _collect_batch(
        self,
        rows: Sequence[Row[Any]],
        futures: list[asyncio.Future[tuple[PubAck, float]]],
        error: BaseException | None,
    ) -> None:
        try:
            if futures:
                await asyncio.wait(futures, timeout=self._ack_timeout)
            acked, error = self._collect(rows, futures, error)
            if acked:
                self._mark_later(acked)  # into _marking before it leaves _in_flight
        except BaseException as failure:
            error = failure
            raise
        finally:
            self._in_flight.difference_update(row.id for row in rows)
            if self._deferred:
                self._deferred = False
                self.signal.notify()
            if error is not None:
                if self._pipeline_error is None:
                    self._pipeline_error = RelayError(
                        f"a batch of {len(rows)} stopped early: {error!r}"
                    )
                    self._pipeline_error.__cause__ = error
                self.signal.notify()  # the loop settles, backs off and selects again

    def _take_pipeline_error(self) -> None:
        error, self._pipeline_error = self._pipeline_error, None
        if error is not None:
            self._chain.clear()  # the server's last message of a stream is not known
            raise error

    async def _settle(self) -> None:
        """Return once every batch in flight was acknowledged or failed."""
        while pending := [task for task in self._collectors if not task.done()]:
            await asyncio.wait(pending)

    async def _drain_batch(self) -> tuple[int, int]:
        if not self._nc.is_connected:
            raise RelayError("NATS is not connected")
        if is_postgres(self._engine):
            async with self._engine.begin() as conn:
                locked = await conn.scalar(select(func.pg_try_advisory_xact_lock(self._lock_key)))
                if not locked:
                    raise _LockBusy
                rows = await self._select(conn)
                acked, error = await self._publish(rows)
                await self._mark(conn, acked)
        else:
            if len(self._marking) >= self._batch_size:
                await self._marks_written()  # bounded: a batch's worth waits at most
            # Taken before the select: a row whose marking commits meanwhile may still
            # be read as pending, and must not be published again.
            marking = set(self._marking)
            async with read_only(self._engine) as conn:  # not in the writers' queue
                rows = await self._select(conn, extra=len(marking))
                await conn.rollback()
            rows = [row for row in rows if row.id not in marking][: self._batch_size]
            acked, error = await self._publish(rows)
            if acked:
                self._mark_later(acked)
        if error is not None:
            raise RelayError(f"published {len(acked)} of {len(rows)} before: {error!r}") from error
        return len(rows), len(acked)

    async def _select(self, conn: AsyncConnection, extra: int = 0) -> Sequence[Row[Any]]:
        result = await conn.execute(
            select(OUTBOX)
            .where(OUTBOX.c.published_at.is_(None))
            .order_by(OUTBOX.c.id)
            .limit(self._batch_size + extra)
        )
        return result.all()

    def _mark_later(self, ids: list[int]) -> None:
        """Mark ``ids`` published in the background (SQLite): the acks that arrive while
        one marking write runs go together in the next (group commit)."""
        self._marking.update(ids)
        task = asyncio.get_running_loop().create_task(self._mark_then_release(ids))
        self._mark_tasks.add(task)
        task.add_done_callback(self._mark_tasks.discard)

    async def _mark_then_release(self, ids: list[int]) -> None:
        try:
            await self._marker.submit(ids)
        finally:
            self._marking.difference_update(ids)

    async def _mark_published(self, groups: list[list[int]]) -> list[None]:
        try:
            async with self._engine.begin() as conn:
                await self._mark(conn, [row_id for ids in groups for row_id in ids])
        except Exception as exc:
            # Still pending in the table: selected and published again (a duplicate
            # JetStream drops), then marked.
            _log.warning("marking published outbox rows failed", error=repr(exc))
        return [None] * len(groups)

    async def _marks_written(self) -> None:
        """Return once every acknowledged row was marked (or its marking failed)."""
        while pending := [task for task in self._mark_tasks if not task.done()]:
            await asyncio.wait(pending)  # being cancelled (stop's grace) leaves them running

    async def _mark(self, conn: AsyncConnection, ids: list[int]) -> None:
        if ids:
            await conn.execute(
                update(OUTBOX).where(OUTBOX.c.id.in_(ids)).values(published_at=datetime.now(UTC))
            )

    async def _publish(self, rows: Sequence[Row[Any]]) -> tuple[list[int], BaseException | None]:
        """Publish ``rows`` pipelined; returns the ids of the acknowledged prefix."""
        futures, error = await self._send(rows, {})
        if futures:
            await asyncio.wait(futures, timeout=self._ack_timeout)
        return self._collect(rows, futures, error)

    async def _send(
        self, rows: Sequence[Row[Any]], last_of_stream: dict[str, str]
    ) -> tuple[list[asyncio.Future[tuple[PubAck, float]]], BaseException | None]:
        """Publish ``rows``, each chained to ``last_of_stream`` (updated); their ack
        futures, and the error that stopped the sending early."""
        futures: list[asyncio.Future[tuple[PubAck, float]]] = []
        error: BaseException | None = None
        try:
            for row in rows:
                headers = build_headers(
                    row.message_id,
                    row.ce_type,
                    self._source,
                    row.ce_subject,
                    row.created_at,
                    row.correlation_id,
                    row.causation_id,
                    row.traceparent,
                )
                stream = self._stream_of_subject.get(row.subject)
                if stream is None:
                    last_of_stream.clear()  # an unknown stream may sit between any two
                else:
                    previous = last_of_stream.get(stream)
                    if previous is not None:
                        headers[EXPECTED_LAST_MSG_ID] = previous
                    last_of_stream[stream] = row.message_id
                futures.append(await self._acks.publish(row.subject, row.payload, headers))
        except Exception as exc:
            error = exc
        return futures, error

    def _collect(
        self,
        rows: Sequence[Row[Any]],
        futures: list[asyncio.Future[tuple[PubAck, float]]],
        error: BaseException | None,
    ) -> tuple[list[int], BaseException | None]:
        """The ids of the acknowledged prefix of ``rows``, and the error that ended it."""
        acked: list[int] = []
        for row, future in zip(rows, futures, strict=False):
            if not future.done() or future.cancelled():
                error = TimeoutError(f"no ack for {row.message_id} in {self._ack_timeout}s")
                break
            failure = future.exception()
            if failure is not None:
                error = failure
                break
            ack, acked_at = future.result()
            self._stream_of_subject[row.subject] = ack.stream
            if ack.duplicate:
                self.stats.duplicates += 1
            acked.append(row.id)
            # From the commit where this process made it, else from the insert (a row of
            # another process or of before a restart: the commit is not known)
            committed_at = self.signal.commit_time(row.message_id)
            if committed_at is None:
                committed_at = _aware(row.created_at).timestamp()
            metrics.OUTBOX_LAG.observe(max(0.0, acked_at - committed_at))
        for future in futures:
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved, so asyncio does not warn
        self.stats.published += len(acked)
        metrics.OUTBOX_PUBLISHED.inc(len(acked))
        return acked, error


def _aware(time: datetime) -> datetime:
    """SQLite gives naive datetimes back (stored as UTC)."""
    return time if time.tzinfo is not None else time.replace(tzinfo=UTC)
