"""The API boundary: untrusted requests checked and turned into domain values; every
problem becomes a field violation (INVALID_ARGUMENT with BadRequest details), never an
INTERNAL error. The messages themselves are built by :mod:`trinity_work.codec`."""

from __future__ import annotations

import re
from datetime import timedelta

from google.protobuf import duration_pb2

from trinity.process.common.v1 import types_pb2
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity_platform.errors import FieldViolation, InvalidArgument
from trinity_platform.pagination import PageRequest, page_request
from trinity_work import codec as pb
from trinity_work.domain.lease import MAX_DELIVERIES, MAX_LEASE, MAX_TIMEOUT

MAX_ID = 255
MAX_TEXT = 1_000_000  # characters of a message, an output, a subject
MAX_ARGUMENTS = 64
MAX_EVIDENCE = 100

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class Violations:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def required(self, field: str, value: str, limit: int = MAX_ID) -> None:
        if not value.strip():
            self.add(field, "is required")
        elif len(value) > limit:
            self.add(field, f"must be at most {limit} characters")

    def optional(self, field: str, value: str, limit: int = MAX_ID) -> None:
        if len(value) > limit:
            self.add(field, f"must be at most {limit} characters")

    def money(self, field: str, value: types_pb2.Money) -> None:
        if not _CURRENCY.match(value.currency_code):
            self.add(f"{field}.currency_code", "must be a three-letter ISO 4217 code like USD")
        if not -999_999_999 <= value.nanos <= 999_999_999:
            self.add(f"{field}.nanos", "must lie in -999,999,999..999,999,999")
        elif (value.units > 0 and value.nanos < 0) or (value.units < 0 and value.nanos > 0):
            self.add(f"{field}.nanos", "must have the same sign as units")

    def duration(
        self, field: str, value: duration_pb2.Duration, upper: timedelta
    ) -> timedelta | None:
        if not -999_999_999 <= value.nanos <= 999_999_999 or (
            (value.seconds > 0 and value.nanos < 0) or (value.seconds < 0 and value.nanos > 0)
        ):
            self.add(field, "is not a valid duration")
            return None
        result = pb.from_duration(value)
        if result == timedelta(0):
            return None  # zero: the default
        if result < timedelta(0):
            self.add(field, "must not be negative")
            return None
        if result > upper:
            self.add(field, f"must be at most {upper}")
            return None
        return result

    def raise_if_any(self, message: str = "invalid request") -> None:
        if self.items:
            summary = "; ".join(f"{v.field}: {v.description}" for v in self.items[:5])
            raise InvalidArgument(f"{message}: {summary}", self.items)


def _payload(v: Violations, payload: work_pb2.WorkPayload) -> None:
    case = payload.WhichOneof("kind")
    if case is None:
        v.add("payload", "set one of agent_task, tool_run, notification")
    elif case == "agent_task":
        task = payload.agent_task
        v.required("payload.agent_task.agent", task.agent)
        v.optional("payload.agent_task.message", task.message, MAX_TEXT)
        if task.HasField("max_cost"):
            v.money("payload.agent_task.max_cost", task.max_cost)
    elif case == "tool_run":
        run = payload.tool_run
        if run.action not in pb.ACTION_FROM_PROTO:
            v.add("payload.tool_run.action", "must be SCAFFOLD, GENERATE, VERIFY or PUBLISH")
        if len(run.arguments) > MAX_ARGUMENTS:
            v.add("payload.tool_run.arguments", f"at most {MAX_ARGUMENTS} arguments")
        for name, value in run.arguments.items():
            if not _ARGUMENT.match(name) or len(name) > 64:
                v.add(f"payload.tool_run.arguments[{name}]", "is not a valid argument name")
            if len(value) > 65_536 or "\x00" in value:
                v.add(f"payload.tool_run.arguments[{name}]", "value too long or contains NUL")
    else:
        note = payload.notification
        if note.channel not in pb.CHANNEL_FROM_PROTO:
            v.add("payload.notification.channel", "must be WEBHOOK, EMAIL, SLACK or FILE")
        elif note.channel != pb.CHANNEL_TO_PROTO[pb.Channel.SLACK]:
            v.required("payload.notification.target", note.target, 2048)
        v.optional("payload.notification.target", note.target, 2048)
        v.optional("payload.notification.subject", note.subject, 1000)
        v.optional("payload.notification.message", note.message, MAX_TEXT)


def request_work(request: work_service_pb2.RequestWorkRequest) -> tuple[timedelta | None]:
    v = Violations()
    v.required("request_id", request.request_id)
    _payload(v, request.payload)
    timeout = None
    if request.HasField("timeout"):
        timeout = v.duration("timeout", request.timeout, MAX_TIMEOUT)
    if request.max_deliveries > MAX_DELIVERIES:
        v.add("max_deliveries", f"must be at most {MAX_DELIVERIES}")
    ref = request.correlation
    v.optional("correlation.execution_id", ref.execution_id)
    v.optional("correlation.step_id", ref.step_id)
    v.raise_if_any("invalid RequestWork")
    return (timeout,)


def _lease(
    v: Violations, field: str, value: duration_pb2.Duration, present: bool
) -> timedelta | None:
    return v.duration(field, value, MAX_LEASE) if present else None


def record_started(request: work_service_pb2.RecordWorkStartedRequest) -> timedelta | None:
    v = Violations()
    v.optional("request_id", request.request_id)
    v.required("work_id", request.work_id)
    v.required("executor_id", request.executor_id)
    lease = _lease(v, "lease_duration", request.lease_duration, request.HasField("lease_duration"))
    v.raise_if_any("invalid RecordWorkStarted")
    return lease


def heartbeat(request: work_service_pb2.HeartbeatWorkRequest) -> timedelta | None:
    v = Violations()
    v.required("work_id", request.work_id)
    v.required("executor_id", request.executor_id)
    v.optional("progress", request.progress, 10_000)
    lease = _lease(v, "lease_duration", request.lease_duration, request.HasField("lease_duration"))
    v.raise_if_any("invalid HeartbeatWork")
    return lease


def record_completed(request: work_service_pb2.RecordWorkCompletedRequest) -> None:
    v = Violations()
    v.optional("request_id", request.request_id)
    v.required("work_id", request.work_id)
    v.required("executor_id", request.executor_id)
    result = request.result
    v.optional("result.output", result.output, MAX_TEXT)
    if result.HasField("cost"):
        v.money("result.cost", result.cost)
    if result.context_used < 0:
        v.add("result.context_used", "must not be negative")
    if len(result.evidence) > MAX_EVIDENCE:
        v.add("result.evidence", f"at most {MAX_EVIDENCE} items")
    for i, evidence in enumerate(result.evidence):
        if evidence.kind not in pb.EVIDENCE_FROM_PROTO:
            v.add(f"result.evidence[{i}].kind", "must be set to a known evidence kind")
        v.optional(f"result.evidence[{i}].uri", evidence.uri, 4096)
        v.optional(f"result.evidence[{i}].text", evidence.text, 100_000)
    if result.ByteSize() > 2 * MAX_TEXT:
        v.add("result", "is too large; store large outputs as evidence references")
    v.raise_if_any("invalid RecordWorkCompleted")


def record_failed(request: work_service_pb2.RecordWorkFailedRequest) -> None:
    v = Violations()
    v.optional("request_id", request.request_id)
    v.required("work_id", request.work_id)
    v.required("executor_id", request.executor_id)
    if not _CODE.match(request.error.code) or len(request.error.code) > 64:
        v.add("error.code", "must be a stable UPPER_SNAKE code such as AGENT_UNAVAILABLE")
    v.optional("error.message", request.error.message, 100_000)
    v.raise_if_any("invalid RecordWorkFailed")


def cancel(request: work_service_pb2.CancelWorkRequest) -> None:
    v = Violations()
    v.optional("request_id", request.request_id)
    v.required("work_id", request.work_id)
    v.optional("reason", request.reason, 10_000)
    v.raise_if_any("invalid CancelWork")


def get(request: work_service_pb2.GetWorkRequest) -> None:
    v = Violations()
    v.required("work_id", request.work_id)
    v.raise_if_any("invalid GetWork")


def list_work(request: work_service_pb2.ListWorkRequest) -> PageRequest:
    v = Violations()
    v.optional("execution_id", request.execution_id)
    if request.status and request.status not in pb.STATUS_FROM_PROTO:
        v.add("status", "is not a known work status")
    if request.kind and request.kind not in pb.KIND_FROM_PROTO:
        v.add("kind", "is not a known work kind")
    try:
        page = page_request(request.page_size, request.page_token, list_filters(request))
        if page.after is not None and len(page.after) != 2:
            raise InvalidArgument(
                "bad token", [FieldViolation("page_token", "is not a token this service issued")]
            )
    except InvalidArgument as exc:
        v.items.extend(exc.violations)
        page = PageRequest(0, None)
    v.raise_if_any("invalid ListWork")
    return page


def list_filters(request: work_service_pb2.ListWorkRequest) -> tuple[str, int, int]:
    """What a page token is bound to: a token is refused with another filter."""
    return (request.execution_id, int(request.status), int(request.kind))
