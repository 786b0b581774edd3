"""`facts tail`: every fact from JetStream, decoded by its ``ce-type``.

(Imported only when the command runs: nats-py takes most of a second to import.)

:func:`tail` is the whole subscriber: an ordered ephemeral consumer per facts
stream, the CloudEvents attributes from the ``ce-`` headers, and the protobuf
message chosen by ``ce-type``. It is the template for any projection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import nats
from google.protobuf.message import Message
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

# The generated modules register the fact types that decode() looks up by ce-type.
from trinity.process.approval.v1 import facts_pb2 as _approval_facts  # noqa: F401
from trinity.process.definition.v1 import facts_pb2 as _definition_facts  # noqa: F401
from trinity.process.execution.v1 import facts_pb2 as _execution_facts  # noqa: F401
from trinity.process.work.v1 import facts_pb2 as _work_facts  # noqa: F401
from trinity_cli.client import SERVICES
from trinity_cli.context import Context
from trinity_cli.errors import CliError, ExitCode
from trinity_cli.render import duration, money, one_line
from trinity_platform.envelope import Envelope, EnvelopeError, decode, format_time
from trinity_platform.json_values import message_to_dict, struct_to_dict
from trinity_platform.logs import redact_url
from trinity_platform.nats_connect import NatsConfigError, nats_security_from_env
from trinity_platform.subjects import all_facts_subject

Show = Callable[[Envelope, Message], None]


async def tail(js: JetStreamContext, services: list[str], show: Show, new: bool) -> None:
    """Subscribe to the facts of ``services``: ``show(envelope, fact)`` gets each, decoded."""

    async def on_message(msg: Msg) -> None:
        envelope = Envelope.from_msg(msg)  # the CloudEvents attributes, from the ce- headers
        show(envelope, decode(envelope))  # the protobuf message that ce-type names

    policy = DeliverPolicy.NEW if new else DeliverPolicy.ALL
    for service in services:  # one ordered, ephemeral consumer per facts stream
        subject = all_facts_subject(service)  # trinity.process.<service>.facts.v1.>
        await js.subscribe(subject, cb=on_message, ordered_consumer=True, deliver_policy=policy)


async def connect(nats_url: str) -> NATS:
    """A NATS connection, or a one-line UNREACHABLE error after one quick retry.

    Later errors (a message that is not a fact this CLI knows, a lost connection)
    are reported on stderr, one line each, instead of nats-py's logged traceback.
    """
    errors: list[BaseException] = []
    connected = False

    async def report(error: Exception) -> None:
        errors.append(error)
        if connected:
            what = "skipped a message" if isinstance(error, EnvelopeError) else "NATS"
            print(f"trinity-process: {what}: {one_line(str(error), 200)}", file=sys.stderr)

    try:
        # TLS and credentials from TRINITY_NATS_* (e.g. the read-only `subscriber` user).
        security = nats_security_from_env().connect_options()
    except (NatsConfigError, OSError) as error:
        raise CliError(f"NATS settings: {error}", ExitCode.USAGE) from None
    try:
        nc = await nats.connect(
            nats_url,
            allow_reconnect=False,
            connect_timeout=2,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            error_cb=report,
            **security,
        )
    except (OSError, TimeoutError, nats.errors.Error) as error:
        why = errors[-1] if errors else error
        raise CliError(
            f"NATS at {redact_url(nats_url)} is unreachable ({one_line(redact_url(str(why)) or type(why).__name__, 80)}); "
            "is the suite running (`make run`)? Set TRINITY_NATS_URL or --nats-url "
            "to point elsewhere",
            ExitCode.UNREACHABLE,
        ) from None
    connected = True
    return nc


def execution_of(envelope: Envelope, fact: Message) -> str:
    """The execution a fact belongs to: its correlation id, or the id inside the fact."""
    if envelope.correlation_id:
        return envelope.correlation_id
    for holder in (fact, getattr(fact, "execution", None), getattr(fact, "correlation", None)):
        value = getattr(holder, "execution_id", None)
        if isinstance(value, str) and value:
            return value
    return ""


def summary(fact: Message, subject: str = "") -> str:
    """``key=value`` of what a fact says, for one line: no timestamps, no repeated ids."""
    said: set[tuple[str, str]] = set()
    parts = []
    for key, value in _fields(fact, subject):
        if (key, value) not in said:
            said.add((key, value))
            parts.append(f"{key}={one_line(value, 60)}")
    return " ".join(parts)


_FIRST = {"iteration": 1, "attempt": 1, "delivery": 1}  # said only when not the first


def _fields(message: Message, subject: str) -> Iterator[tuple[str, str]]:
    for descriptor, value in message.ListFields():
        name = descriptor.name
        kind = descriptor.message_type.full_name if descriptor.message_type else ""
        if name.endswith("_time") or kind == "trinity.process.execution.v1.ExecutionRef":
            continue  # the line starts with the time; the subject names the execution
        if value == subject or _FIRST.get(name) == value:
            continue
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            yield name, json.dumps(dict(value), separators=(",", ":"))
        elif _is_repeated(descriptor):
            if descriptor.message_type is None:
                yield name, ",".join(_scalar(descriptor, item) for item in value)
            else:
                yield name, f"[{len(value)}]"
        elif kind == "trinity.process.common.v1.Money":
            yield name, money(value)
        elif kind == "trinity.process.common.v1.StepRef":
            if value.step_id:
                yield "step", value.step_id + (f"#{value.iteration}" if value.iteration > 1 else "")
        elif kind == "trinity.process.definition.v1.ProcessSpec":
            yield "steps", str(len(value.steps))
        elif kind == "google.protobuf.Duration":
            if duration(value) != "-":
                yield name, duration(value)
        elif kind == "google.protobuf.Timestamp":
            yield name, format_time(value.ToDatetime(tzinfo=UTC))
        elif kind == "google.protobuf.Struct":
            yield name, json.dumps(struct_to_dict(value), separators=(",", ":"))
        elif descriptor.message_type is not None:
            yield from _fields(value, subject)
        else:
            yield name, _scalar(descriptor, value)


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf >= 6
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def _scalar(field: Any, value: Any) -> str:
    if field.enum_type is not None:
        name = (
            field.enum_type.values_by_number[value].name
            if value in field.enum_type.values_by_number
            else str(value)
        )
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", field.enum_type.name).upper() + "_"
        return name.removeprefix(prefix).lower()
    return str(value)


@dataclass
class FactPrinter:
    """Shows the facts a ``facts tail`` asked for, as text lines or JSON Lines."""

    ctx: Context
    stop: asyncio.Event
    execution: str = ""
    count: int = 0
    shown: int = 0
    last: float = field(default_factory=time.monotonic)

    def __call__(self, envelope: Envelope, fact: Message) -> None:
        self.last = time.monotonic()
        if self.stop.is_set():  # messages already delivered after the last one wanted
            return
        if self.execution and execution_of(envelope, fact) != self.execution:
            return
        try:
            self.ctx.print(self.render(envelope, fact))
        except BrokenPipeError:  # `facts tail | head`
            self.stop.set()
            return
        self.shown += 1
        if self.count and self.shown >= self.count:
            self.stop.set()

    def render(self, envelope: Envelope, fact: Message) -> str:
        if self.ctx.json:
            return json.dumps(
                {
                    "id": envelope.id,
                    "type": envelope.type,
                    "source": envelope.source,
                    "subject": envelope.subject,
                    "time": format_time(envelope.time),
                    "correlation_id": envelope.correlation_id,
                    "causation_id": envelope.causation_id,
                    "fact": message_to_dict(fact, preserving_proto_field_name=True),
                },
                separators=(",", ":"),
            )
        service = envelope.source.rsplit("/", 1)[-1]
        name = envelope.type.rsplit(".", 1)[-1]
        when = format_time(envelope.time)[11:23]
        return f"{when}  {service:<10}  {name:<18}  {envelope.subject}  {summary(fact, envelope.subject)}"


def tail_facts(ctx: Context) -> int:
    args = ctx.args

    async def run() -> None:
        nc = await connect(ctx.nats_url)
        try:
            js = nc.jetstream()
            services = await _with_stream(js, args.service or list(SERVICES))
            if not services:
                raise CliError(
                    f"no facts stream on NATS at {redact_url(ctx.nats_url)} yet "
                    "(have the services started?)"
                )
            printer = FactPrinter(ctx, asyncio.Event(), args.execution or "", args.count)
            await tail(js, services, printer, args.new)
            while not printer.stop.is_set():
                if args.idle and time.monotonic() - printer.last > args.idle:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(printer.stop.wait(), timeout=0.1)
        finally:
            await nc.close()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail normally ends
        asyncio.run(run())
    return int(ExitCode.OK)


async def _with_stream(js: JetStreamContext, services: list[str]) -> list[str]:
    """The services whose facts stream exists (a service that never ran has none)."""
    found, missing = [], []
    for service in services:
        try:
            await js.find_stream_name_by_subject(all_facts_subject(service))
            found.append(service)
        except NotFoundError:
            missing.append(service)
    if found:
        for service in missing:
            print(f"(no facts stream of the {service} service yet; skipped)", file=sys.stderr)
    return found
