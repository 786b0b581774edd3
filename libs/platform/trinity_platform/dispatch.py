"""The command outbox's sender: delivers commands to another service until it accepts.

A service that must call another service as part of a state change (execution asking
work for an agent task, approval asking work for a notification) writes the command as
a row of its ``dispatches`` table in the same transaction as the change (invariant 1:
nothing is lost between commit and call). :class:`CommandDispatcher` then:

- claims due rows with a short lease (``next_attempt_at`` pushed forward in one
  ``UPDATE … RETURNING``; SKIP LOCKED on PostgreSQL, so replicas share the load),
  after a read-only probe when it polls, since most polls find nothing (a round woken
  by a commit that wrote commands, or after a full batch, claims straight away);
- sends each with its idempotency key (a row sent twice after a crash is harmless);
  the due rows of a kind with a :class:`BatchSender` go in one call per batch (one gRPC
  call instead of one per command), each item answered on its own and classified as a
  single send is; a batch the receiver refuses whole with a permanent code (an older
  receiver without the batch RPC, a hostile item the receiver checks only per call) is
  sent again item by item, so no item is refused for another's sake; a transport
  failure of the call is a transient failure of each of its items;
- marks it done with the id the receiver assigned (the outcomes of the sends that
  finish while one such write runs go in the next, in one transaction), or retries it
  with capped exponential backoff, never sooner than the receiver's ``RetryInfo``;
- marks refusals no retry can fix (:func:`~trinity_platform.grpc_errors.is_permanent`,
  or a sender's :class:`PermanentRefusal`) refused and reports them to the service.

One loop for every service (invariant 11); the services only say which table, which
columns and how each kind of command is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import structlog
from google.protobuf.message import Message
from google.rpc import status_pb2
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform import metrics
from trinity_platform.batches import status_code, status_retry_delay
from trinity_platform.db import read_only
from trinity_platform.group_commit import GroupCommit
from trinity_platform.grpc_errors import is_permanent, retry_delay
from trinity_platform.logs import get_logger
from trinity_platform.loops import raise_if_cancelled
from trinity_platform.telemetry import current_traceparent, span

_log = get_logger(__name__)

PENDING = "pending"
DONE = "done"
ONLY_KIND = "command"
"""The kind of every row of a table without a kind column."""


@dataclass(frozen=True)
class DispatchTable:
    """Where a service keeps its outgoing commands, and which columns say what."""

    table: Table
    aggregate_column: str
    """The id of the aggregate whose change wrote the command (execution_id...)."""
    result_column: str
    """Where the id the receiver assigned is kept (result_id, work_id...)."""
    kind_column: str | None = None
    """Which sender delivers the row; None: one sender, under ``ONLY_KIND``."""
    traceparent_column: str | None = None
    extra_columns: tuple[str, ...] = ()
    """More columns handed to senders (``Dispatch.extra``)."""
    refused_status: str = "rejected"


@dataclass(frozen=True)
class Dispatch:
    """One claimed command."""

    id: int
    key: str
    aggregate_id: str
    kind: str
    payload: bytes
    attempts: int
    traceparent: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetState:
    """Where another command stands (a cancel waits for the command it cancels)."""

    status: str
    result_id: str | None


class NotYet(Exception):
    """A sender's way to say: try again later (e.g. the command to cancel is in flight)."""


class PermanentRefusal(Exception):
    """A sender's way to say: never retry this (e.g. nothing left to cancel)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ItemRefused(Exception):
    """A batch item's own refusal by the receiver: its status, classified as a failed
    single call is (``is_permanent(code)``; ``retry_after`` from its RetryInfo)."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


def item_refused(status: Message) -> ItemRefused:
    """A batch item's status (a ``google.rpc.Status``, or a contract's message of its wire
    format such as work's ``ItemStatus``) as the item's refusal."""
    rpc = (
        status
        if isinstance(status, status_pb2.Status)
        else status_pb2.Status.FromString(status.SerializeToString())
    )
    return ItemRefused(status_code(rpc), rpc.message, status_retry_delay(rpc))


def batch_outcomes(results: Sequence[Any], resource: str) -> list[ItemOutcome]:
    """The outcomes of a batch reply's results (a ``oneof outcome { <resource>; error }``
    each, as ``RequestWorkResult``): the resource's id, or the item's refusal."""
    return [
        item_refused(result.error)
        if result.WhichOneof("outcome") == "error"
        else str(getattr(result, resource).id)
        for result in results
    ]


# Delivers one command; returns the id the receiver assigned ("" or None when none).
Sender = Callable[[Dispatch], Awaitable[str | None]]
# What one item of a batch got: the id the receiver assigned ("" or None when none), or
# the exception a single send would have raised (NotYet, PermanentRefusal, ItemRefused...).
ItemOutcome = str | None | Exception


@dataclass(frozen=True)
class BatchSender:
    """Delivers many commands of one kind in one call; answers one outcome per command,
    in order. Raises when the call itself fails (every item's failure)."""

    send: Callable[[Sequence[Dispatch]], Awaitable[Sequence[ItemOutcome]]]
    max_items: int = 100
    """The receiver's bound on a batch's items."""
    max_bytes: int = 1 << 20
    """Payload bytes per call, well inside gRPC's 4 MB message limit (a bigger command
    goes alone)."""


# Told of a command refused for good: (the command, error code, message).
RefusalHandler = Callable[[Dispatch, str, str], Awaitable[None]]


async def command_state(engine: AsyncEngine, spec: DispatchTable, key: str) -> TargetState | None:
    """Where the command with ``key`` stands (None: there is none)."""
    c = spec.table.c
    async with read_only(engine) as conn:
        row = (
            await conn.execute(select(c.status, c[spec.result_column]).where(c.key == key))
        ).first()
    return None if row is None else TargetState(row[0], row[1])


@dataclass(frozen=True)
class _Outcome:
    """How a send ended, to be written to its row."""

    row_id: int
    status: str
    attempts: int
    result_id: str | None
    error: str | None


UNBATCHED_SECONDS = 300.0
"""How long commands go one by one after their receiver said it has no batch RPC."""


def backoff_seconds(attempts: int, maximum: float) -> float:
    return float(min(0.2 * 2 ** max(attempts - 1, 0), maximum))


class CommandDispatcher:
    """Sends a service's pending commands; ``run()`` is a runtime background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: DispatchTable,
        senders: Mapping[str, Sender],
        on_refused: RefusalHandler | None = None,
        *,
        batch_senders: Mapping[str, BatchSender] | None = None,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        concurrency: int = 64,
        lease: timedelta = timedelta(seconds=30),
        max_backoff: float = 30.0,
        retention: timedelta = timedelta(days=7),
        prune_interval: float = 3600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._spec = table
        self._rows = table.table
        self._senders = dict(senders)
        self._batch_senders = dict(batch_senders or {})
        # Kinds whose receiver has no batch RPC (UNIMPLEMENTED): sent one by one until then.
        self._unbatched_until: dict[str, float] = {}
        self._on_refused = on_refused
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._limit = asyncio.Semaphore(concurrency)
        self._lease = lease
        self._max_backoff = max_backoff
        self._retention = retention
        self._prune_interval = prune_interval
        self._clock = clock
        self._wake = asyncio.Event()
        self._outcomes: GroupCommit[_Outcome, None] = GroupCommit(self._write_outcomes)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Send until cancelled; prune finished rows now and then."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time() + self._prune_interval
        woken = False
        while True:
            raise_if_cancelled()
            try:
                claimed = await self.dispatch_once(probe=not woken)
                if loop.time() >= next_prune:
                    next_prune = loop.time() + self._prune_interval
                    await self.prune()
            except Exception:
                _log.exception("dispatch round failed")
                claimed = 0
            woken = claimed >= self._batch_size  # more may be due
            if woken:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            woken = self._wake.is_set()
            self._wake.clear()

    async def dispatch_once(self, *, probe: bool = True) -> int:
        """Claim due rows and send them; returns how many were claimed. ``probe``: look
        first, read-only, whether any is due (False when a commit said so)."""
        rows = await self._claim(probe)
        if rows:
            await asyncio.gather(*(self._send_all(group) for group in self._calls(rows)))
        return len(rows)

    async def lookup(self, key: str) -> TargetState | None:
        """Where the command with ``key`` stands (None: there is none)."""
        return await command_state(self._engine, self._spec, key)

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Delete finished rows created before ``now - older_than`` (default: retention)."""
        cutoff = self._clock() - (self._retention if older_than is None else older_than)
        c = self._rows.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(self._rows).where(c.status != PENDING, c.created_at < cutoff)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------------ internals

    async def _claim(self, probe: bool = True) -> list[Dispatch]:
        now = self._clock()
        c = self._rows.c
        due = (c.status == PENDING, c.next_attempt_at <= now)
        if probe:
            async with read_only(self._engine) as conn:  # most polls find nothing to send
                if await conn.scalar(select(c.id).where(*due).limit(1)) is None:
                    return []
        async with self._engine.begin() as conn:
            chosen = (
                select(c.id).where(*due).order_by(c.next_attempt_at, c.id).limit(self._batch_size)
            )
            if conn.dialect.name == "postgresql":
                chosen = chosen.with_for_update(skip_locked=True)
            # One statement: lease the due rows and read them back.
            claimed = await conn.execute(
                update(self._rows)
                .where(c.id.in_(chosen.scalar_subquery()))
                .values(next_attempt_at=now + self._lease)
                .returning(*self._rows.c)
            )
            rows = [self._dispatch(r) for r in claimed.mappings()]
        rows.sort(key=lambda row: row.id)  # RETURNING's order is not the query's
        return rows

    def _dispatch(self, row: Mapping[Any, Any]) -> Dispatch:
        spec = self._spec
        return Dispatch(
            id=row["id"],
            key=row["key"],
            aggregate_id=row[spec.aggregate_column],
            kind=row[spec.kind_column] if spec.kind_column else ONLY_KIND,
            payload=bytes(row["payload"]),
            attempts=row["attempts"],
            traceparent=row[spec.traceparent_column] if spec.traceparent_column else None,
            extra={name: row[name] for name in spec.extra_columns},
        )

    def _calls(self, rows: list[Dispatch]) -> list[list[Dispatch]]:
        """The calls that send ``rows``: one per row, or one per batch of a kind with a
        batch sender (bounded by its items and bytes)."""
        calls: list[list[Dispatch]] = []
        open_batches: dict[str, list[Dispatch]] = {}
        sizes: dict[str, int] = {}
        now = asyncio.get_running_loop().time()
        for row in rows:
            batch = self._batch_senders.get(row.kind)
            if batch is None or self._unbatched_until.get(row.kind, 0.0) > now:
                calls.append([row])
                continue
            current = open_batches.get(row.kind)
            size = len(row.payload)
            if current is None or (
                len(current) >= batch.max_items or sizes[row.kind] + size > batch.max_bytes
            ):
                current = open_batches[row.kind] = []
                sizes[row.kind] = 0
                calls.append(current)
            current.append(row)
            sizes[row.kind] += size
        return calls

    async def _send_all(self, rows: list[Dispatch]) -> None:
        # A lone command goes by its single sender: the same cost, and its own trace.
        if len(rows) == 1 and rows[0].kind in self._senders:
            await self._send(rows[0])
        else:
            await self._send_batch(rows)

    async def _send_batch(self, rows: list[Dispatch]) -> None:
        batch = self._batch_senders[rows[0].kind]
        # Each item carries the trace of its own dispatch span (its row's trace).
        traced = []
        for row in rows:
            with span(f"dispatch {row.kind}", row.traceparent):
                here = current_traceparent()
            traced.append(dataclasses.replace(row, traceparent=here) if here else row)
        async with self._limit:
            outcomes = await self._call(batch, traced)
        if outcomes is None:  # refused whole: no item is refused for another's sake
            await asyncio.gather(*(self._send(row) for row in rows))
            return
        await asyncio.gather(
            *(
                self._settle(row, row.attempts + 1, outcome)
                for row, outcome in zip(rows, outcomes, strict=True)
            )
        )

    async def _call(self, batch: BatchSender, rows: list[Dispatch]) -> Sequence[ItemOutcome] | None:
        """Each row's outcome of one batch call; None when the call was refused whole."""
        kind = rows[0].kind
        try:
            outcomes = await batch.send(rows)
            if len(outcomes) != len(rows):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(rows)} commands")
            return outcomes
        except grpc.aio.AioRpcError as error:
            if is_permanent(error.code()):
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:  # an older receiver
                    later = asyncio.get_running_loop().time() + UNBATCHED_SECONDS
                    self._unbatched_until[kind] = later
                _log.warning(
                    "batch refused whole; sending its commands one by one",
                    kind=kind,
                    commands=len(rows),
                    code=error.code().name,
                    error=error.details(),
                )
                return None
            failed = ItemRefused(error.code(), error.details() or "", retry_delay(error))
            return [failed] * len(rows)
        except Exception as error:  # a bug or a transport error: keep them, retry
            _log.exception("batch dispatch failed", kind=kind, commands=len(rows))
            return [error] * len(rows)

    async def _send(self, row: Dispatch) -> None:
        with (
            # Log lines name what they are about (execution_id=..., approval_id=...).
            structlog.contextvars.bound_contextvars(
                **{self._spec.aggregate_column: row.aggregate_id}, dispatch_key=row.key
            ),
            span(f"dispatch {row.kind}", row.traceparent),
        ):
            await self._deliver(row)

    async def _deliver(self, row: Dispatch) -> None:
        sender = self._senders.get(row.kind)
        outcome: ItemOutcome
        async with self._limit:
            try:
                if sender is None:
                    raise PermanentRefusal("UNKNOWN_COMMAND", f"no sender for {row.kind}")
                outcome = await sender(row)
            except grpc.aio.AioRpcError as error:
                outcome = ItemRefused(error.code(), error.details() or "", retry_delay(error))
            except (NotYet, PermanentRefusal) as refusal:
                outcome = refusal
            except Exception as error:  # a bug or a transport error: keep it, retry
                _log.exception("dispatch failed", key=row.key)
                outcome = error
        await self._settle(row, row.attempts + 1, outcome)

    async def _settle(self, row: Dispatch, attempts: int, outcome: ItemOutcome) -> None:
        """Write how a send ended: done, retried later or refused for good."""
        if isinstance(outcome, NotYet):
            await self._retry_later(row, attempts, str(outcome))
        elif isinstance(outcome, PermanentRefusal):
            await self._refuse(row, attempts, outcome.code, outcome.message)
        elif isinstance(outcome, ItemRefused):
            if is_permanent(outcome.code):
                await self._refuse(row, attempts, outcome.code.name, outcome.message)
            else:
                message = f"{outcome.code.name}: {outcome.message}"
                await self._retry_later(row, attempts, message, outcome.retry_after)
        elif isinstance(outcome, Exception):
            await self._retry_later(row, attempts, repr(outcome))
        else:
            await self._finish(row, DONE, attempts, result_id=outcome or None)
            metrics.DISPATCH_SENT.labels(row.kind, "sent").inc()

    async def _retry_later(
        self, row: Dispatch, attempts: int, error: str, at_least: float | None = None
    ) -> None:
        delay = max(backoff_seconds(attempts, self._max_backoff), at_least or 0.0)
        metrics.DISPATCH_SENT.labels(row.kind, "retry").inc()
        log = _log.warning if attempts in (1, 10) or attempts % 100 == 0 else _log.debug
        log("dispatch will be retried", key=row.key, attempts=attempts, error=error)
        c = self._rows.c
        async with self._engine.begin() as conn:
            await conn.execute(
                update(self._rows)
                .where(c.id == row.id, c.status == PENDING)
                .values(
                    attempts=attempts,
                    last_error=error,
                    next_attempt_at=self._clock() + timedelta(seconds=delay),
                )
            )

    async def _refuse(self, row: Dispatch, attempts: int, code: str, message: str) -> None:
        _log.warning("dispatch refused for good", key=row.key, code=code, error=message)
        metrics.DISPATCH_SENT.labels(row.kind, "rejected").inc()
        await self._finish(row, self._spec.refused_status, attempts, error=f"{code}: {message}")
        if self._on_refused is not None:
            await self._on_refused(row, code, message)

    async def _finish(
        self,
        row: Dispatch,
        status: str,
        attempts: int,
        *,
        result_id: str | None = None,
        error: str | None = None,
    ) -> None:
        await self._outcomes.submit(_Outcome(row.id, status, attempts, result_id, error))

    async def _write_outcomes(self, outcomes: list[_Outcome]) -> list[None]:
        c = self._rows.c
        statement = (
            update(self._rows)
            .where(c.id == bindparam("row_id"), c.status == PENDING)
            .values(
                {
                    "status": bindparam("new_status"),
                    "attempts": bindparam("new_attempts"),
                    self._spec.result_column: bindparam("result_id"),
                    "last_error": bindparam("error"),
                }
            )
        )
        async with self._engine.begin() as conn:
            await conn.execute(
                statement,
                [
                    {
                        "row_id": o.row_id,
                        "new_status": o.status,
                        "new_attempts": o.attempts,
                        "result_id": o.result_id,
                        "error": o.error,
                    }
                    for o in outcomes
                ],
            )
        return [None] * len(outcomes)
