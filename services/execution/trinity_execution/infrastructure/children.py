"""Sub-process commands, delivered inside the execution service (it owns both executions).

They go through the same dispatch table as the commands for other services, so each is
written in the transaction of the decision that made it and retried until it is done:

- ``start_child_execution`` triggers the child with its parent's step attempt request key
  as the TriggerProcess idempotency key and an execution id derived from that key, so a
  redelivery, or a crash between the decision's commit and the dispatch being marked done,
  starts one child, never two.
- ``cancel_child_execution`` cancels the child once its start was accepted.
- ``notify_parent`` continues the parent's step attempt with the child's end (the parent's
  engine ignores an answer to an attempt that no longer waits, so a redelivery is harmless).

The payloads are JSON (internal to the service, never on the wire to anyone else).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from trinity.process.execution.v1 import execution_service_pb2 as pb
from trinity_execution import domain as d
from trinity_execution.infrastructure.translate import cancel_key, struct
from trinity_platform.dispatch import Dispatch, NotYet, PermanentRefusal, Sender, TargetState
from trinity_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from trinity_process_model.model import Money

START_CHILD = "start_child_execution"
CANCEL_CHILD = "cancel_child_execution"
NOTIFY_PARENT = "notify_parent"


def dispatch_of(command: d.Command) -> tuple[str, str, bytes, str | None] | None:
    """(kind, key, payload, target key) of a sub-process command; None for other commands."""
    match command:
        case d.StartChildExecution():
            data: dict[str, Any] = {
                "execution_id": command.child_execution_id,
                "process": command.process,
                "version": command.version,
                "input": command.input,
                "triggered_by": command.triggered_by,
                "trigger_kind": command.trigger_kind,
                "parent": d.ParentLink(
                    command.correlation.execution_id,
                    command.correlation.step_id,
                    command.key,
                    command.depth,
                ).to_dict(),
            }
            return START_CHILD, command.key, _encode(data), None
        case d.CancelChildExecution():
            data = {"reason": command.reason, "compensate": command.compensate}
            return CANCEL_CHILD, cancel_key(command.key), _encode(data), command.key
        case d.NotifyParent():
            data = {
                "parent_execution_id": command.parent_execution_id,
                "request": command.request,
                "child_execution_id": command.child_execution_id,
                "status": command.status,
                "output": command.output,
                "structured": command.structured,
                "cost": None
                if command.cost is None
                else {"amount": str(command.cost.amount), "currency": command.cost.currency},
                "error_code": command.error_code,
                "error_message": command.error_message,
            }
            return NOTIFY_PARENT, command.key, _encode(data), None
    return None


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def child_senders(
    start: Callable[[dict[str, Any], pb.TriggerProcessRequest], Awaitable[str]],
    cancel: Callable[[str, str, str, pb.CancelExecutionRequest], Awaitable[object]],
    continue_parent: Callable[[str, Callable[[datetime], d.Event]], Awaitable[object]],
    lookup: Callable[[str], Awaitable[TargetState | None]],
) -> dict[str, Sender]:
    """The senders; ``start`` triggers (idempotently) and returns the child's id, ``cancel``
    cancels a child (parent id, child id, reason), ``continue_parent`` applies an event to
    an execution, ``lookup`` finds where another command stands."""

    async def start_child(row: Dispatch) -> str:
        data = json.loads(row.payload)
        request = pb.TriggerProcessRequest(
            request_id=row.key,
            process_name=data["process"],
            version=data["version"],
            input=struct(data["input"]),
        )
        try:
            return await start(data, request)
        except (InvalidArgument, NotFound, FailedPrecondition) as refused:
            raise PermanentRefusal(refused.reason, refused.message) from None

    async def cancel_child(row: Dispatch) -> str:
        target_key = row.extra.get("target_key")
        if target_key is None:
            raise PermanentRefusal("NO_TARGET", "cancel without a target command")
        target = await lookup(target_key)
        if target is None or target.status == "rejected":
            return ""  # the child never started
        if target.status != "done" or not target.result_id:
            raise NotYet(f"{target_key} not accepted yet")
        data = json.loads(row.payload)
        reason = data.get("reason") or "the parent step stopped"
        request = pb.CancelExecutionRequest(
            request_id=row.key,
            execution_id=target.result_id,
            reason=reason,
            compensate=bool(data.get("compensate", False)),
        )
        with contextlib.suppress(FailedPrecondition, NotFound):  # it ended: nothing to cancel
            await cancel(row.aggregate_id, target.result_id, reason, request)
        return target.result_id

    async def notify_parent(row: Dispatch) -> str:
        data = json.loads(row.payload)
        cost = data.get("cost")

        def event(now: datetime) -> d.Event:
            return d.ChildExecutionEnded(
                now=now,
                request=data["request"],
                child_execution_id=data["child_execution_id"],
                status=data["status"],
                output=data.get("output"),
                structured=data.get("structured"),
                cost=None if not cost else Money(Decimal(cost["amount"]), cost["currency"]),
                error_code=data.get("error_code", ""),
                error_message=data.get("error_message", ""),
            )

        await continue_parent(data["parent_execution_id"], event)
        return data["parent_execution_id"]

    return {START_CHILD: start_child, CANCEL_CHILD: cancel_child, NOTIFY_PARENT: notify_parent}
