"""Mapping the error family to gRPC status codes with rich details, and back.

Server side: ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer with
an ``ErrorInfo{reason, domain="trinity.process", metadata}`` always, a
``BadRequest`` with the field violations for :class:`InvalidArgument`, and a
``RetryInfo`` when the error says when to retry (``retry_after``).
Client side: :func:`error_details`, :func:`to_trinity_error`, :func:`retry_delay`,
and the one classification every retrying caller uses: :func:`is_permanent`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from trinity_platform.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TrinityError,
    Unauthenticated,
    Unavailable,
)

ERROR_DOMAIN = "trinity.process"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_CODES: dict[type[TrinityError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Aborted: grpc.StatusCode.ABORTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_CLASSES: dict[grpc.StatusCode, type[TrinityError]] = {v: k for k, v in _CODES.items()}
_CLASSES[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable

# Answers that say the request itself can never succeed: retrying it is pointless.
# Every other failure (UNAVAILABLE, ABORTED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
# UNAUTHENTICATED while credentials are fixed, and INTERNAL/UNKNOWN from older
# servers that did not yet map transient database errors) is retried with the same
# idempotency key, which makes the retry safe.
PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


def is_permanent(code: grpc.StatusCode) -> bool:
    """True when a call that failed with ``code`` must not be retried."""
    return code in PERMANENT_CODES or code == grpc.StatusCode.OK


def status_code_for(error: TrinityError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def _rpc_code(code: grpc.StatusCode) -> int:
    return int(code.value[0])


# Error texts often quote the request ("no definition 'x…'"), and a hostile request can
# be megabytes. The status travels in trailers, which clients refuse past 8-16 KB (they
# then see RESOURCE_EXHAUSTED instead of the error), so each part is clipped (UTF-8 bytes).
MAX_MESSAGE_BYTES = 400
MAX_FIELD_BYTES = 96
MAX_DESCRIPTION_BYTES = 192
MAX_VIOLATIONS_BYTES = 3000
MAX_METADATA_BYTES = 600


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, marked with "…" when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode(errors="ignore") + "…"


def _bounded_violations(violations: list[FieldViolation]) -> list[FieldViolation]:
    kept: list[FieldViolation] = []
    budget = MAX_VIOLATIONS_BYTES
    for index, v in enumerate(violations):
        clipped = FieldViolation(
            clip(v.field, MAX_FIELD_BYTES), clip(v.description, MAX_DESCRIPTION_BYTES)
        )
        budget -= len(clipped.field.encode()) + len(clipped.description.encode())
        if budget < 0:
            kept.append(FieldViolation("", f"and {len(violations) - index} more violations"))
            break
        kept.append(clipped)
    return kept


def _bounded_metadata(metadata: dict[str, str]) -> dict[str, str]:
    kept: dict[str, str] = {}
    budget = MAX_METADATA_BYTES
    for key, value in metadata.items():
        key, value = clip(key, 48), clip(value, 96)
        budget -= len(key.encode()) + len(value.encode())
        if budget < 0:
            break
        kept[key] = value
    return kept


def to_rpc_status(error: TrinityError) -> status_pb2.Status:
    """The ``google.rpc.Status`` describing ``error`` (bounded in size, see ``clip``)."""
    code = status_code_for(error)
    status = status_pb2.Status(code=_rpc_code(code), message=clip(error.message, MAX_MESSAGE_BYTES))
    info = error_details_pb2.ErrorInfo(
        reason=clip(error.reason, 64),
        domain=ERROR_DOMAIN,
        metadata=_bounded_metadata(error.metadata),
    )
    status.details.add().Pack(info)
    if error.retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromTimedelta(timedelta(seconds=max(error.retry_after, 0.0)))
        status.details.add().Pack(retry)
    if isinstance(error, InvalidArgument) and error.violations:
        violation = error_details_pb2.BadRequest.FieldViolation
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                violation(field=v.field, description=v.description)
                for v in _bounded_violations(error.violations)
            ]
        )
        status.details.add().Pack(bad_request)
    return status


def to_grpc_status(error: TrinityError) -> grpc.Status:
    return rpc_status.to_status(to_rpc_status(error))


def internal_status(reference: str) -> grpc.Status:
    """INTERNAL with a generic message; ``reference`` lets an operator find the log line."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (reference {reference})"
    )
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"reference": reference}
        )
    )
    return rpc_status.to_status(status)


def rpc_status_of(rpc_error: Any) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` carried by a failed call (sync or asyncio), if any."""
    trailing = rpc_error.trailing_metadata() if hasattr(rpc_error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def retry_delay(rpc_error: Any) -> float | None:
    """The server's ``RetryInfo`` delay in seconds, when the failed call carries one."""
    status = rpc_status_of(rpc_error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return float(retry.retry_delay.ToTimedelta().total_seconds())
    return None


def error_details(rpc_error: Any) -> tuple[str | None, list[FieldViolation]]:
    """(ErrorInfo reason, BadRequest field violations) of a failed call."""
    status = rpc_status_of(rpc_error)
    return (None, []) if status is None else status_details(status)


def status_details(status: status_pb2.Status) -> tuple[str | None, list[FieldViolation]]:
    """(ErrorInfo reason, BadRequest field violations) of a google.rpc.Status (a failed
    call's, or a batch item's)."""
    reason: str | None = None
    violations: list[FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(
                FieldViolation(v.field, v.description) for v in bad_request.field_violations
            )
    return reason, violations


def to_trinity_error(rpc_error: Any) -> TrinityError:
    """Rebuild the server's error from a failed call (service-to-service calls)."""
    code = rpc_error.code()
    message = rpc_error.details() or ""
    status = rpc_status_of(rpc_error)
    metadata: dict[str, str] = {}
    reason: str | None = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
    cls = _CLASSES.get(code, TrinityError)
    if cls is InvalidArgument:
        _, violations = error_details(rpc_error)
        return InvalidArgument(message, violations, reason=reason, metadata=metadata)
    return cls(
        message, reason=reason or code.name, metadata=metadata, retry_after=retry_delay(rpc_error)
    )
