"""CloudEvents 1.0 in NATS binary content mode.

The payload is the protobuf-encoded message; the attributes travel as ``ce-``
headers. ``Nats-Msg-Id`` equals ``ce-id`` so JetStream drops a republished
duplicate inside the stream's duplicate window. Empty ``correlationid`` /
``causationid`` extensions are left out of the headers (CloudEvents extensions
are optional) and read back as ``""``.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

SPECVERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
NATS_MSG_ID = "Nats-Msg-Id"

H_SPECVERSION = "ce-specversion"
H_ID = "ce-id"
H_SOURCE = "ce-source"
H_TYPE = "ce-type"
H_SUBJECT = "ce-subject"
H_TIME = "ce-time"
H_CONTENT_TYPE = "ce-datacontenttype"
H_CORRELATION = "ce-correlationid"
H_CAUSATION = "ce-causationid"
# The CloudEvents distributed-tracing extension: the W3C traceparent of the producer.
H_TRACEPARENT = "ce-traceparent"


class EnvelopeError(ValueError):
    """A message is not a valid Trinity CloudEvent (missing header, unknown type)."""


class _NatsMsg(Protocol):
    subject: str
    data: bytes
    headers: dict[str, str] | None


def format_time(time: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``."""
    if time.tzinfo is None:
        time = time.replace(tzinfo=UTC)
    return time.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_headers(
    message_id: str,
    ce_type: str,
    source: str,
    subject: str,
    time: datetime,
    correlation_id: str = "",
    causation_id: str = "",
    traceparent: str | None = None,
) -> dict[str, str]:
    headers = {
        H_SPECVERSION: SPECVERSION,
        H_ID: message_id,
        H_SOURCE: source,
        H_TYPE: ce_type,
        H_SUBJECT: subject,
        H_TIME: format_time(time),
        H_CONTENT_TYPE: CONTENT_TYPE,
        NATS_MSG_ID: message_id,
    }
    if correlation_id:
        headers[H_CORRELATION] = correlation_id
    if causation_id:
        headers[H_CAUSATION] = causation_id
    if traceparent:
        headers[H_TRACEPARENT] = traceparent
    return headers


@dataclass(frozen=True)
class Envelope:
    """The CloudEvent attributes and the raw payload of one NATS message."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: bytes
    correlation_id: str = ""
    causation_id: str = ""
    nats_subject: str = ""
    traceparent: str = ""
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_headers(cls, headers: dict[str, str], data: bytes, nats_subject: str = "") -> Envelope:
        missing = [h for h in (H_ID, H_SOURCE, H_TYPE, H_SPECVERSION) if not headers.get(h)]
        if missing:
            raise EnvelopeError(f"not a CloudEvent: missing header(s) {', '.join(missing)}")
        if headers[H_SPECVERSION] != SPECVERSION:
            raise EnvelopeError(f"unsupported ce-specversion {headers[H_SPECVERSION]!r}")
        content_type = headers.get(H_CONTENT_TYPE, CONTENT_TYPE)
        if content_type != CONTENT_TYPE:
            raise EnvelopeError(f"unsupported ce-datacontenttype {content_type!r}")
        try:
            time = parse_time(headers[H_TIME]) if headers.get(H_TIME) else datetime.now(UTC)
        except ValueError:
            raise EnvelopeError(f"invalid ce-time {headers[H_TIME]!r}") from None
        return cls(
            id=headers[H_ID],
            source=headers[H_SOURCE],
            type=headers[H_TYPE],
            subject=headers.get(H_SUBJECT, ""),
            time=time,
            data=data,
            correlation_id=headers.get(H_CORRELATION, ""),
            causation_id=headers.get(H_CAUSATION, ""),
            nats_subject=nats_subject,
            traceparent=headers.get(H_TRACEPARENT, ""),
            headers=dict(headers),
        )

    @classmethod
    def from_msg(cls, msg: Any) -> Envelope:
        """Parse a ``nats.aio.msg.Msg`` (raises :class:`EnvelopeError`)."""
        nats_msg: _NatsMsg = msg
        return cls.from_headers(dict(nats_msg.headers or {}), nats_msg.data, nats_msg.subject)


def _import_package_of(full_name: str) -> None:
    """Import every generated module of the message's proto package (its Python package).

    A subscriber then decodes any fact by its ce-type without knowing which file
    defines it.
    """
    package = full_name.rpartition(".")[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def message_class(full_name: str) -> type[Message]:
    """The generated class of a protobuf message, by its full name (the ce-type)."""
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        _import_package_of(full_name)
        try:
            descriptor = pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise EnvelopeError(f"unknown message type {full_name!r}") from None
    return message_factory.GetMessageClass(descriptor)


def decode(envelope: Envelope) -> Message:
    """The protobuf message carried by ``envelope``, typed by its ``ce-type``."""
    cls = message_class(envelope.type)
    msg = cls()
    try:
        msg.ParseFromString(envelope.data)
    except Exception as exc:  # DecodeError and friends
        raise EnvelopeError(f"cannot decode {envelope.type}: {exc}") from None
    return msg
