"""Traces (OpenTelemetry) and the log context of every gRPC call, message and job.

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: spans go to that OTLP/gRPC
collector (the standard ``OTEL_*`` variables apply). Off, nothing is installed: no
tracer provider, no client interceptor, no traceparent in the outbox, and the few
``span()`` calls on the hot path return at once.

The W3C ``traceparent`` travels in gRPC metadata, in outbox rows (then in the facts'
and intents' ``ce-traceparent`` header, the CloudEvents distributed-tracing
extension) and in the execution's dispatch and timer rows, so one trace follows a step from
TriggerProcess through the dispatcher, RequestWork, the intent, the executor and
RecordWork* back to the fact consumer and the next step.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from functools import cache
from typing import Any

import grpc
import structlog
from grpc import aio
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from trinity_platform import metrics
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

TRACEPARENT = "traceparent"
_PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None  # set by configure_tracing: tracing is on
_provider: Any = None

# Request fields bound into the log context of a call (where the request has them).
LOG_ID_FIELDS = ("execution_id", "step_id", "work_id", "approval_id", "definition_id")


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_tracing(service_name: str, endpoint: str, *, exporter: Any = None) -> bool:
    """Export spans of this process to ``endpoint`` (OTLP/gRPC); no-op when empty.
    Tests pass an ``exporter`` (e.g. the SDK's in-memory one) instead of an endpoint."""
    global _tracer, _provider
    if (not endpoint and exporter is None) or _tracer is not None:
        return _tracer is not None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
        )
    )
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("trinity")
    _log.info("tracing on", endpoint=endpoint, service=service_name)
    return True


def shutdown_tracing() -> None:
    """Export what is buffered and stop (at process stop)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def tracing_enabled() -> bool:
    return _tracer is not None


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span; None when tracing is off or no span runs."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextmanager
def span(
    name: str,
    parent: str | None = None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """A span (child of ``parent`` — a traceparent — or of the current span); nothing when off."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    context = _PROPAGATOR.extract({TRACEPARENT: parent}) if parent else None
    with tracer.start_as_current_span(
        name, context=context, kind=kind, attributes=dict(attributes or {})
    ) as current:
        yield current


def envelope_ids(envelope: Any) -> dict[str, str]:
    """Log context of a fact or intent: its execution (correlation) and the id of the
    aggregate it is about (``ce-subject``), named after the emitting service."""
    found = {"message_id": envelope.id}
    if envelope.correlation_id:
        found["execution_id"] = envelope.correlation_id
    parts = envelope.type.split(".")
    if len(parts) > 3 and parts[0] == "trinity" and envelope.subject:
        found[f"{parts[2]}_id"] = envelope.subject
    return found


def ids_of(message: Any) -> dict[str, str]:
    """The non-empty id fields of a request message (and of its ``correlation`` step
    reference, where it has one), for the log context."""
    found: dict[str, str] = {}
    for holder in (message, getattr(message, "correlation", None)):
        descriptor = getattr(holder, "DESCRIPTOR", None)
        if descriptor is None:
            continue
        for name in _id_fields(descriptor):
            value = getattr(holder, name)
            if value:
                found.setdefault(name, value)
    return found


@cache
def _id_fields(descriptor: Any) -> tuple[str, ...]:
    """The string id fields a message type has (looked up once per type)."""
    fields = descriptor.fields_by_name
    return tuple(
        name
        for name in LOG_ID_FIELDS
        if name in fields and fields[name].type == fields[name].TYPE_STRING
    )


# ----------------------------------------------------------------- gRPC server


class TelemetryInterceptor(aio.ServerInterceptor):
    """The outermost interceptor: times and counts each call by method and final
    status code and (tracing on) runs the call in a server span that continues the
    caller's traceparent."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        from trinity_platform.interceptors import wrap_handler

        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        seconds = metrics.GRPC_SECONDS.labels(method)
        return wrap_handler(handler, lambda behavior: _observed(behavior, method, seconds))


def _traceparent(context: Any) -> str | None:
    """The caller's traceparent (read per call: the wrapped handler is the method's)."""
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT:
            return value if isinstance(value, str) else value.decode()
    return None


def _code_name(context: Any, failure: BaseException | None) -> str:
    try:
        code = context.code()
    except Exception:  # a context without code() (older grpc)
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if failure is None:
        return "OK"
    if isinstance(failure, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


_handled: dict[tuple[str, str], Any] = {}  # (method, code) → its counter child


def _finish(
    current: Any,
    start: float,
    seconds: Any,
    method: str,
    context: Any,
    failure: BaseException | None,
) -> None:
    seconds.observe(time.perf_counter() - start)
    code = _code_name(context, failure)
    counter = _handled.get((method, code))
    if counter is None:
        counter = _handled[method, code] = metrics.GRPC_HANDLED.labels(method, code)
    counter.inc()
    if current is not None:
        current.set_attribute("rpc.grpc.status_code", code)
        if code != "OK":
            current.set_status(Status(StatusCode.ERROR, code))


_NO_SPAN = nullcontext()


def _server_span(method: str, context: Any) -> Any:
    if _tracer is None:
        return _NO_SPAN
    return span(method, _traceparent(context), kind=SpanKind.SERVER)


def _observed(behavior: Any, method: str, seconds: Any) -> Any:
    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            failure: BaseException | None = None
            with _server_span(method, context) as current:
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    _finish(current, start, seconds, method, context, failure)

        return stream_wrapper

    async def wrapper(request: Any, context: Any) -> Any:
        start = time.perf_counter()
        failure: BaseException | None = None
        with _server_span(method, context) as current:
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except BaseException as exc:
                failure = exc
                raise
            finally:
                _finish(current, start, seconds, method, context, failure)

    return wrapper


class LogContextInterceptor(aio.ServerInterceptor):
    """The innermost interceptor: binds the ids of the decoded request
    (``execution_id``, ``work_id`` …) into the log context of the call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        from trinity_platform.interceptors import wrap_handler

        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        return wrap_handler(handler, lambda behavior: _with_request_ids(behavior, method))


def _with_request_ids(behavior: Any, method: str) -> Any:
    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: Any) -> Any:
            with structlog.contextvars.bound_contextvars(**ids_of(request)):
                _log.debug("stream opened", method=method)
                async for item in behavior(request, context):
                    yield item

        return stream_wrapper

    async def wrapper(request: Any, context: Any) -> Any:
        with structlog.contextvars.bound_contextvars(**ids_of(request)):
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            _log.debug("call handled", method=method)
            return result

    return wrapper


# ----------------------------------------------------------------- gRPC client


class _TracingClientInterceptor(aio.UnaryUnaryClientInterceptor, aio.UnaryStreamClientInterceptor):
    """A client span per call; its traceparent goes in the call's metadata."""

    def _details(self, details: Any, current: Any) -> Any:
        metadata = list(details.metadata or ())
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        if TRACEPARENT in carrier:
            metadata.append((TRACEPARENT, carrier[TRACEPARENT]))
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        with span(method, kind=SpanKind.CLIENT) as current:
            call = await continuation(self._details(details, current), request)
            return await call

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        with span(method, kind=SpanKind.CLIENT) as current:
            return await continuation(self._details(details, current), request)


def client_interceptors(env: Mapping[str, str] | None = None) -> list[aio.ClientInterceptor]:
    """Interceptors for a channel to another service: none when tracing is off."""
    return [_TracingClientInterceptor()] if tracing_requested(env) else []


__all__ = [
    "TRACEPARENT",
    "LogContextInterceptor",
    "TelemetryInterceptor",
    "client_interceptors",
    "configure_tracing",
    "current_traceparent",
    "envelope_ids",
    "ids_of",
    "shutdown_tracing",
    "span",
    "tracing_enabled",
    "tracing_requested",
]
