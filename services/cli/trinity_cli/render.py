"""Turning messages into text for people and JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TextIO

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from trinity.process.common.v1 import types_pb2
from trinity_platform.json_values import message_to_dict


def to_dict(message: Message) -> dict[str, Any]:
    """The canonical protobuf JSON mapping with proto field names, every field present;
    integral numbers as integers (``trinity_platform.json_values``)."""
    return message_to_dict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def money(value: types_pb2.Money | None) -> str:
    """``0.42 USD``; ``-`` when unset."""
    if value is None or (not value.currency_code and not value.units and not value.nanos):
        return "-"
    amount = Decimal(value.units) + Decimal(value.nanos) / Decimal(1_000_000_000)
    whole, _, fraction = format(amount.normalize(), "f").partition(".")
    return f"{whole}.{fraction.ljust(2, '0')} {value.currency_code or 'USD'}"


def timestamp(value: Timestamp, has: bool = True) -> str:
    """UTC ``2026-01-14 09:30:12``; ``-`` when unset."""
    if not has or (value.seconds == 0 and value.nanos == 0):
        return "-"
    return value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(value: Duration | float | None) -> str:
    """``850ms``, ``12.3s``, ``4m05s``, ``2h03m``; ``-`` when unset."""
    if value is None:
        return "-"
    seconds = value if isinstance(value, float | int) else value.ToTimedelta().total_seconds()
    if seconds <= 0:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def since(value: Timestamp) -> float:
    if value.seconds == 0:
        return 0.0
    return (datetime.now(UTC) - value.ToDatetime(tzinfo=UTC)).total_seconds()


def enum_name(full: str, prefix: str) -> str:
    """``EXECUTION_STATUS_RUNNING`` → ``running``."""
    short = full.removeprefix(prefix)
    return "-" if short == "UNSPECIFIED" else short.lower()


def one_line(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


def print_json(value: Any, out: TextIO | None = None, *, lines: bool = False) -> None:
    """Indented JSON, or one compact line (JSON Lines) when ``lines``."""
    out = out or sys.stdout
    if lines:
        print(json.dumps(value, separators=(",", ":"), sort_keys=False), file=out, flush=True)
    else:
        print(json.dumps(value, indent=2), file=out, flush=True)
