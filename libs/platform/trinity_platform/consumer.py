"""Durable JetStream pull consumers that never die on a bad message or a lost connection.

A handler returns an :data:`Outcome` for each message: ``Ack()``, ``Nak(delay)``
(redeliver later), ``Term(reason)`` (never redeliver) or ``Failed(error)``. A handler
exception (or ``Failed``) is logged and the message is nak'ed with an exponential
delay. A message that is not a valid CloudEvent is terminated. Handlers must be
idempotent (use the inbox): delivery is at least once.

Two kinds of handler: a :data:`Handler` gets one message at a time (``concurrency``
of them at once); a :data:`BatchHandler` gets each fetched batch whole (the
messages' :class:`Delivery`, in stream order) and answers one outcome per message,
so it can apply the batch in one transaction. Its span per message is its own to
open (:meth:`Delivery.span`), around the work done for that message.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind

from trinity_platform import metrics
from trinity_platform.envelope import Envelope, EnvelopeError
from trinity_platform.logs import get_logger
from trinity_platform.telemetry import envelope_ids, span

_log = get_logger(__name__)

TRANSIENT_MAX_DELAY = 2.0  # seconds: redelivery after a transient failure, at most


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Nak:
    delay: float = 0.0


@dataclass(frozen=True)
class Term:
    reason: str = ""


@dataclass(frozen=True)
class Failed:
    """Handling the message failed: logged and redelivered with the runner's back-off,
    as for a handler exception (a batch handler's answer for one message that failed)."""

    error: Exception


Outcome = Ack | Nak | Term | Failed
Handler = Callable[[Envelope, Msg], Awaitable[Outcome]]


@dataclass(frozen=True)
class Delivery:
    """One message of a fetched batch, its CloudEvent read."""

    envelope: Envelope
    msg: Msg

    def span(self) -> AbstractContextManager[object]:
        """The consumer span of this message (a child of the span that published it)."""
        return _consume_span(self.envelope)


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[Sequence[Outcome]]]


async def ensure_consumer(
    js: Any,
    stream: str,
    durable: str,
    filter_subjects: Sequence[str],
    *,
    ack_wait: float = 30.0,
    max_deliver: int = -1,
    max_ack_pending: int = 1000,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
) -> None:
    """Create the durable pull consumer, or update it to this config."""
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=deliver_policy,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
    subjects = list(filter_subjects)
    if len(subjects) == 1:
        config.filter_subject = subjects[0]
    elif subjects:
        config.filter_subjects = subjects
    await js.add_consumer(stream, config)


class PullConsumerRunner:
    """Fetches batches from a durable consumer and hands each message to ``handler``,
    or each batch to ``batch_handler`` (one of the two)."""

    def __init__(
        self,
        js: Any,
        *,
        stream: str,
        durable: str,
        filter_subjects: Sequence[str],
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        batch: int = 100,
        ack_wait: float = 30.0,
        max_deliver: int = -1,
        concurrency: int = 1,
        fetch_timeout: float = 2.0,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 60.0,
        is_transient: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._js = js
        self.stream = stream
        self.durable = durable
        self._filter_subjects = list(filter_subjects)
        if (handler is None) == (batch_handler is None):
            raise ValueError("give a consumer either a handler or a batch handler")
        self._handler = handler
        self._batch_handler = batch_handler
        self._batch = batch
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._concurrency = max(1, concurrency)
        self._fetch_timeout = fetch_timeout
        self._retry_base_delay = retry_base_delay
        self._retry_max_delay = retry_max_delay
        # A failure that says nothing about the message (the database refused a
        # connection) is retried soon, whatever its delivery count.
        self._is_transient = is_transient
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._in_flight: dict[int, Msg] = {}  # by id(): Msg is not hashable
        self.handled = 0

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("consumer already started")
        self._stopping.clear()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"consumer-{self.durable}"
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop fetching, let running handlers finish (up to ``grace`` s), unsubscribe."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(task, grace)
        except TimeoutError:
            _log.warning("consumer did not stop in time; cancelled", durable=self.durable)

    # ------------------------------------------------------------------ internals

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            sub = None
            try:
                await ensure_consumer(
                    self._js,
                    self.stream,
                    self.durable,
                    self._filter_subjects,
                    ack_wait=self._ack_wait,
                    max_deliver=self._max_deliver,
                )
                sub = await self._js.pull_subscribe_bind(durable=self.durable, stream=self.stream)
                delay = 0.1
                await self._fetch_loop(sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("consumer error; resubscribing", durable=self.durable, error=repr(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def _fetch_loop(self, sub: Any) -> None:
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat())
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.ensure_future(sub.fetch(self._batch, timeout=self._fetch_timeout))
                await asyncio.wait({fetch, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await fetch
                    return
                try:
                    msgs = fetch.result()
                except TimeoutError:
                    continue
                if self._batch_handler is not None:
                    await self._handle_whole(msgs, self._batch_handler)
                else:
                    await self._handle_each(msgs)
        finally:
            stop_wait.cancel()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _handle_each(self, msgs: list[Msg]) -> None:
        self._in_flight.update(
            (id(m), m) for m in msgs
        )  # the heartbeat covers messages waiting their turn too
        semaphore = asyncio.Semaphore(self._concurrency)

        async def bounded(msg: Msg) -> None:
            async with semaphore:
                if self._stopping.is_set():  # hand it back at once instead of after ack_wait
                    self._in_flight.pop(id(msg), None)
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    return
                await self._handle(msg)

        if self._concurrency == 1:
            for msg in msgs:
                await bounded(msg)
        else:
            await asyncio.gather(*(bounded(m) for m in msgs))

    async def _handle(self, msg: Msg) -> None:
        try:
            try:
                envelope = Envelope.from_msg(msg)
            except EnvelopeError as exc:
                _log.error("terminating invalid message", durable=self.durable, error=str(exc))
                metrics.CONSUMER_MESSAGES.labels(self.durable, "invalid").inc()
                await msg.term()
                return
            _observe_delivery(self.durable, msg, envelope)
            with structlog.contextvars.bound_contextvars(**envelope_ids(envelope)):
                await self._handle_envelope(msg, envelope)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # ack/nak failed (connection lost): redelivered after ack_wait
            _log.warning("could not settle message", durable=self.durable, error=repr(exc))
        finally:
            self._in_flight.pop(id(msg), None)

    async def _handle_envelope(self, msg: Msg, envelope: Envelope) -> None:
        assert self._handler is not None
        try:
            with _consume_span(envelope):
                outcome = await self._handler(envelope, msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = Failed(exc)
        await self._settle(msg, envelope, outcome)

    async def _handle_whole(self, msgs: list[Msg], handler: BatchHandler) -> None:
        """The batch to ``handler`` in one call; then each message settled by its outcome."""
        self._in_flight.update((id(m), m) for m in msgs)
        try:
            if self._stopping.is_set():  # hand them back at once instead of after ack_wait
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak()
                return
            deliveries: list[Delivery] = []
            for msg in msgs:
                try:
                    envelope = Envelope.from_msg(msg)
                except EnvelopeError as exc:
                    _log.error("terminating invalid message", durable=self.durable, error=str(exc))
                    metrics.CONSUMER_MESSAGES.labels(self.durable, "invalid").inc()
                    with contextlib.suppress(Exception):
                        await msg.term()
                    continue
                _observe_delivery(self.durable, msg, envelope)
                deliveries.append(Delivery(envelope, msg))
            if not deliveries:
                return
            outcomes: Sequence[Outcome]
            try:
                outcomes = await handler(deliveries)
                if len(outcomes) != len(deliveries):
                    raise RuntimeError(
                        f"batch handler answered {len(outcomes)} outcomes for {len(deliveries)}"
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcomes = [Failed(exc)] * len(deliveries)
            for delivery, outcome in zip(deliveries, outcomes, strict=True):
                with structlog.contextvars.bound_contextvars(**envelope_ids(delivery.envelope)):
                    try:
                        await self._settle(delivery.msg, delivery.envelope, outcome)
                    except Exception as exc:  # connection lost: redelivered after ack_wait
                        _log.warning(
                            "could not settle message", durable=self.durable, error=repr(exc)
                        )
        finally:
            for msg in msgs:
                self._in_flight.pop(id(msg), None)

    async def _settle(self, msg: Msg, envelope: Envelope, outcome: Outcome) -> None:
        if isinstance(outcome, Ack):
            await msg.ack()
        elif isinstance(outcome, Nak):
            await msg.nak(delay=outcome.delay if outcome.delay > 0 else None)
        elif isinstance(outcome, Term):
            _log.warning(
                "message terminated by handler",
                durable=self.durable,
                message_id=envelope.id,
                reason=outcome.reason,
            )
            await msg.term()
        elif isinstance(outcome, Failed):
            await self._redeliver(msg, envelope, outcome.error)
            metrics.CONSUMER_MESSAGES.labels(self.durable, "error").inc()
            return
        else:
            raise TypeError(f"handler returned {outcome!r}, not Ack, Nak, Term or Failed")
        self.handled += 1
        outcome_name = type(outcome).__name__.lower()
        metrics.CONSUMER_MESSAGES.labels(self.durable, outcome_name).inc()
        _log.debug(
            "message handled", durable=self.durable, type=envelope.type, outcome=outcome_name
        )

    async def _redeliver(self, msg: Msg, envelope: Envelope, exc: Exception) -> None:
        """Nak a message whose handling failed, with the back-off of its delivery count."""
        attempt = _num_delivered(msg)
        transient = self._is_transient is not None and self._is_transient(exc)
        ceiling = TRANSIENT_MAX_DELAY if transient else self._retry_max_delay
        retry_in = min(self._retry_base_delay * 2 ** (attempt - 1), ceiling)
        log = _log.warning if transient else _log.error
        log(
            "handler failed; will redeliver",
            durable=self.durable,
            message_id=envelope.id,
            type=envelope.type,
            attempt=attempt,
            retry_in=retry_in,
            error=repr(exc),
            **({} if transient else {"exc_info": exc}),
        )
        await msg.nak(delay=retry_in)

    async def _heartbeat(self) -> None:
        """Tell the server that long-running handlers still work on their messages."""
        interval = max(self._ack_wait / 3, 0.1)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self._in_flight.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()


def _consume_span(envelope: Envelope) -> AbstractContextManager[object]:
    return span(
        f"consume {envelope.type.rsplit('.', 1)[-1]}",
        envelope.traceparent or None,
        kind=SpanKind.CONSUMER,
    )


def _observe_delivery(durable: str, msg: Msg, envelope: Envelope) -> None:
    """Consumer lag, redeliveries and what is still waiting (from the delivery metadata)."""
    lag = (datetime.now(UTC) - envelope.time).total_seconds()
    metrics.CONSUMER_LAG.labels(durable).observe(max(lag, 0.0))
    with contextlib.suppress(Exception):
        meta = msg.metadata
        if (meta.num_delivered or 1) > 1:
            metrics.CONSUMER_REDELIVERIES.labels(durable).inc()
        if meta.num_pending is not None:
            metrics.CONSUMER_PENDING.labels(durable).set(meta.num_pending)


def _num_delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered or 1)
    except Exception:
        return 1


__all__ = [
    "Ack",
    "BatchHandler",
    "Delivery",
    "Failed",
    "Handler",
    "Nak",
    "Outcome",
    "PullConsumerRunner",
    "Term",
    "ensure_consumer",
]
