"""Batch RPCs: many commands in one call, each answered on its own.

A batch RPC (``RequestWorkBatch``...) saves a command dispatcher one gRPC call per
command. Its items are answered exactly as the single RPC answers each: checked by
themselves (the contract marks the items ``checked_per_item``, so the request checks
leave them to :func:`check_item`), idempotent by their own key, refused with their own
``google.rpc.Status``. One bad item never fails the others. The servicer runs every
item at once (:func:`answer_each`), so their grouped writes share the unit of work's
next transaction.

Server side: :func:`check_batch_size`, :func:`check_item`, :func:`answer_each`.
Client side: :func:`status_code`, :func:`status_retry_delay` read an item's status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from trinity_platform.db_errors import transient_database_error
from trinity_platform.errors import FieldViolation, InvalidArgument, TrinityError
from trinity_platform.grpc_errors import to_rpc_status
from trinity_platform.request_checks import message_violations

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")

MAX_BATCH_ITEMS = 100
"""Most items one batch call may carry (a bigger batch is INVALID_ARGUMENT)."""

BATCH_TOO_LARGE = "BATCH_TOO_LARGE"

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def check_batch_size(count: int, field: str = "items", limit: int = MAX_BATCH_ITEMS) -> None:
    """INVALID_ARGUMENT for the whole call: no items, or more than ``limit``."""
    if count == 0:
        raise InvalidArgument(
            f"a batch holds 1 to {limit} items", [FieldViolation(field, "is required")]
        )
    if count > limit:
        raise InvalidArgument(
            f"a batch holds at most {limit} items, this one {count}",
            [FieldViolation(field, f"must hold at most {limit} items, got {count}")],
            reason=BATCH_TOO_LARGE,
            metadata={"limit": str(limit), "count": str(count)},
        )


def check_item(request: Message) -> None:
    """What the request checks do for a single call, for one item (INVALID_ARGUMENT)."""
    violations = message_violations(request)
    if violations:
        raise InvalidArgument(
            "the request holds values outside their documented ranges", violations
        )


async def answer_each(
    items: Sequence[I], run: Callable[[I], Awaitable[R]]
) -> list[R | status_pb2.Status]:
    """``run`` every item at once; per item its result, or the status of its error.

    A refusal (the error family) and a transient database failure are the item's own
    status; anything else is a bug and fails the call (INTERNAL, logged), as it would
    the single RPC.
    """
    outcomes = await asyncio.gather(*(run(item) for item in items), return_exceptions=True)
    answers: list[R | status_pb2.Status] = []
    for outcome in outcomes:
        if not isinstance(outcome, BaseException):
            answers.append(outcome)
            continue
        if not isinstance(outcome, Exception):
            raise outcome  # cancelled
        error = outcome if isinstance(outcome, TrinityError) else transient_database_error(outcome)
        if error is None:
            raise outcome
        answers.append(to_rpc_status(error))
    return answers


def status_code(status: status_pb2.Status) -> grpc.StatusCode:
    """The gRPC code of an item's status (UNKNOWN for a code gRPC does not know)."""
    return _CODES.get(status.code, grpc.StatusCode.UNKNOWN)


def status_retry_delay(status: status_pb2.Status) -> float | None:
    """The item status's ``RetryInfo`` delay in seconds, when it carries one."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return float(retry.retry_delay.ToTimedelta().total_seconds())
    return None


__all__ = [
    "BATCH_TOO_LARGE",
    "MAX_BATCH_ITEMS",
    "answer_each",
    "check_batch_size",
    "check_item",
    "status_code",
    "status_retry_delay",
]
