"""grpc.aio server interceptors: error mapping, and authentication with authorization
(static bearer tokens → identities; each RPC's declared permission, deny by default).

Both wrap the method handler's behaviour, so they work for unary and streaming
RPCs alike (async generator handlers and ``context.write`` handlers).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
from grpc import aio

from trinity_platform.authz import Identity, current_identity, set_current_identity
from trinity_platform.db_errors import transient_database_error
from trinity_platform.errors import PermissionDenied, TrinityError, Unauthenticated
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


def current_principal() -> str | None:
    """The authenticated caller of the current RPC (None: authentication is off)."""
    identity = current_identity()
    return identity.principal if identity is not None else None


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


class HandlerCache(aio.ServerInterceptor):
    """The outermost interceptor: the handler the interceptors inside it make for a
    method, made once and kept for every later call of that method.

    Building it costs every interceptor's ``intercept_service`` and a wrapped handler
    each, per call; the platform's interceptors wrap per method and read what a call
    brings (its metadata) from the call's context when it runs, so the handler made for
    the first call serves them all. An interceptor inside it must do the same.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = await continuation(handler_call_details)
            if handler is not None:  # an unknown method is not remembered
                self._handlers[method] = handler
        return handler


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def _refuse(context: Any, error: TrinityError) -> None:
    status = to_grpc_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


class AuthInterceptor(aio.ServerInterceptor):
    """Authentication and authorization of every RPC, deny by default (invariant 10).

    ``permissions`` maps ``/pkg.Service/Method`` to the permission it declares
    (:func:`trinity_platform.authz.required_permissions`). With ``tokens`` (bearer token →
    identity) authentication is on: a call without ``authorization: Bearer <token>`` is
    UNAUTHENTICATED (AUTHENTICATION_REQUIRED), an unknown token UNAUTHENTICATED
    (INVALID_TOKEN), a caller without the method's permission — or a method that declares
    none — PERMISSION_DENIED (PERMISSION_REQUIRED). Without tokens every call is
    anonymous and allowed. Health and reflection are always allowed.
    """

    def __init__(self, tokens: Mapping[str, Identity], permissions: Mapping[str, str]) -> None:
        self._identities = {_digest(token): identity for token, identity in tokens.items()}
        self._permissions = dict(permissions)

    @property
    def enabled(self) -> bool:
        return bool(self._identities)

    def authenticate(self, metadata: Any) -> Identity | TrinityError | None:
        """The caller's identity, the error refusing it, or None (no token sent)."""
        header = None
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else value.decode()
                break
        if header is None:
            return None
        scheme, _, token = header.strip().partition(" ")
        identity = None
        if scheme.lower() == "bearer" and token.strip():
            identity = self._identities.get(_digest(token.strip()))
        if identity is None:
            return Unauthenticated("invalid or unknown bearer token", reason="INVALID_TOKEN")
        return identity

    def decide(self, method: str, metadata: Any) -> Identity | TrinityError | None:
        """The identity a call runs as (None: anonymous, authentication off) or the error
        that refuses it."""
        if not self.enabled:
            return None
        identity = self.authenticate(metadata)
        if identity is None:
            return Unauthenticated(
                "this service requires authentication: send 'authorization: Bearer <token>' "
                "with a token listed in TRINITY_AUTH_TOKENS",
                reason="AUTHENTICATION_REQUIRED",
            )
        if isinstance(identity, TrinityError):
            return identity
        permission = self._permissions.get(method)
        if permission is None or not identity.may(permission):
            return PermissionDenied(
                f"{identity.principal!r} lacks the permission "
                f"{permission or '(none declared)'!r} that {method} requires",
                reason="PERMISSION_REQUIRED",
                metadata={
                    "principal": identity.principal,
                    "permission": permission or "",
                    "method": method,
                },
            )
        return identity

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(ALWAYS_ALLOWED_SERVICES):
            return handler

        # Decided per call from the call's own metadata: the wrapped handler is the
        # method's, the same for every call (HandlerCache keeps it).
        async def before(context: Any) -> None:
            outcome = self.decide(method, context.invocation_metadata())
            if isinstance(outcome, TrinityError):
                _log.info("call refused", method=method, reason=outcome.reason)
                await _refuse(context, outcome)
                return
            set_current_identity(outcome)

        async def reraise(exc: BaseException, _context: Any) -> None:
            raise exc

        return wrap_handler(handler, lambda behavior: _around(behavior, before, reraise))


__all__ = [
    "ALWAYS_ALLOWED_SERVICES",
    "AuthInterceptor",
    "ErrorMappingInterceptor",
    "HandlerCache",
    "current_principal",
    "wrap_handler",
]
