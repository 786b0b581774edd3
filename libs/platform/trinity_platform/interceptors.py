"""grpc.aio server interceptors: error mapping and static bearer-token authentication.

Both wrap the method handler's behaviour, so they work for unary and streaming
RPCs alike (async generator handlers and ``context.write`` handlers).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import grpc
from grpc import aio

from trinity_platform.db_errors import transient_database_error
from trinity_platform.errors import TrinityError, Unauthenticated
from trinity_platform.grpc_errors import internal_status, to_grpc_status
from trinity_platform.logs import get_logger

_log = get_logger(__name__)

Behavior = Callable[..., Any]
BehaviorWrapper = Callable[[Behavior], Behavior]

# Methods that never need a token (probes, grpcurl discovery).
ALWAYS_ALLOWED_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_principal: ContextVar[str | None] = ContextVar("trinity_principal", default=None)


def current_principal() -> str | None:
    """The authenticated caller of the current RPC (None: no token was sent)."""
    return _principal.get()


def wrap_handler(handler: grpc.RpcMethodHandler, wrap: BehaviorWrapper) -> grpc.RpcMethodHandler:
    """A copy of ``handler`` whose behaviour is ``wrap(behaviour)``."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler  # pragma: no cover - grpc always sets one of the four


def _around(
    behavior: Behavior,
    before: Callable[[Any], Awaitable[None]] | None,
    on_error: Callable[[BaseException, Any], Awaitable[None]],
) -> Behavior:
    """Run ``before(context)`` first and ``on_error(exc, context)`` on failure."""
    if inspect.isasyncgenfunction(behavior):

        async def stream_wrapper(request: Any, context: Any) -> Any:
            try:
                if before is not None:
                    await before(context)
                async for item in behavior(request, context):
                    yield item
            except BaseException as exc:
                await on_error(exc, context)

        return stream_wrapper

    async def wrapper(request: Any, context: Any) -> Any:
        try:
            if before is not None:
                await before(context)
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        except BaseException as exc:
            await on_error(exc, context)
            return None  # pragma: no cover - on_error always raises

    return wrapper


class ErrorMappingInterceptor(aio.ServerInterceptor):
    """TrinityError → its status code with ErrorInfo (+ BadRequest, RetryInfo); a
    transient database failure → UNAVAILABLE or ABORTED with RetryInfo (see
    :mod:`trinity_platform.db_errors`); anything else → INTERNAL with a generic
    message and a reference to the logged traceback."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method

        async def on_error(exc: BaseException, context: Any) -> None:
            if isinstance(exc, aio.AbortError | asyncio.CancelledError) or not isinstance(
                exc, Exception
            ):
                raise exc
            transient = None if isinstance(exc, TrinityError) else transient_database_error(exc)
            if transient is not None:
                _log.warning(
                    "database unavailable for a request",
                    method=method,
                    reason=transient.reason,
                    error=repr(exc),
                )
                status = to_grpc_status(transient)
            elif isinstance(exc, TrinityError):
                _log.info(
                    "request failed",
                    method=method,
                    reason=exc.reason,
                    error_type=type(exc).__name__,
                )
                status = to_grpc_status(exc)
            else:
                reference = uuid.uuid4().hex[:12]
                _log.error(
                    "unhandled exception in RPC", method=method, reference=reference, exc_info=exc
                )
                status = internal_status(reference)
            await context.abort(status.code, status.details, status.trailing_metadata)

        return wrap_handler(handler, lambda behavior: _around(behavior, None, on_error))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AuthInterceptor(aio.ServerInterceptor):
    """Static bearer tokens: ``authorization: Bearer <token>`` → principal.

    No header: the call proceeds with ``current_principal() is None`` (the service
    decides). A malformed header or an unknown token: UNAUTHENTICATED. Health and
    reflection are always allowed.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._principals = {_digest(token): principal for token, principal in tokens.items()}

    def authenticate(self, metadata: Any) -> tuple[bool, str | None]:
        """(accepted, principal) for the invocation metadata of a call."""
        header = None
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        if header is None:
            return True, None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False, None
        principal = self._principals.get(_digest(token.strip()))
        return principal is not None, principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(ALWAYS_ALLOWED_SERVICES):
            return handler
        accepted, principal = self.authenticate(handler_call_details.invocation_metadata)

        async def before(context: Any) -> None:
            if not accepted:
                status = to_grpc_status(
                    Unauthenticated("invalid or unknown bearer token", reason="INVALID_TOKEN")
                )
                await context.abort(status.code, status.details, status.trailing_metadata)
            _principal.set(principal)

        async def reraise(exc: BaseException, _context: Any) -> None:
            raise exc

        return wrap_handler(handler, lambda behavior: _around(behavior, before, reraise))


__all__ = [
    "ALWAYS_ALLOWED_SERVICES",
    "AuthInterceptor",
    "ErrorMappingInterceptor",
    "current_principal",
    "wrap_handler",
]
