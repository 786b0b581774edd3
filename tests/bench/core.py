"""The harness model: figures measured over repeated runs, groups, the report.

A *case* is one measurement, e.g. ``floor.jetstream.publish_ack``. Running it once
returns a mapping ``metric -> value``; the harness runs it several times and keeps,
per metric, every value plus median / min / max. The unit of a metric follows from
the end of its key (see :func:`unit_of`), so micro-benchmarks written elsewhere only
have to follow the naming convention to be shown correctly.

A figure may name a *reference* figure (usually a floor figure measured in the same
run): the table prints the reference beside it with ``ratio = figure / reference``.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Values = Mapping[str, float]

# key suffix -> (unit, which direction is better)
_UNITS: tuple[tuple[str, str, str], ...] = (
    ("_per_s", "/s", "higher"),
    ("_per_second", "/s", "higher"),
    ("_ms", "ms", "lower"),
    ("_us", "µs", "lower"),
    ("_ns", "ns", "lower"),
    ("_s", "s", "lower"),
    ("_x", "x", ""),
    ("_pct", "%", ""),
)
# key prefix (last dotted part) -> unit, e.g. "us_per_decision"
_PREFIX_UNITS: tuple[tuple[str, str, str], ...] = (
    ("ms_per_", "ms", "lower"),
    ("us_per_", "µs", "lower"),
    ("ns_per_", "ns", "lower"),
)
# a statistic named after the unit ("create_ms_median") keeps the unit
_STATISTICS = ("_median", "_mean", "_avg", "_min", "_max", "_p50", "_p90", "_p95", "_p99")


def unit_of(key: str) -> tuple[str, str]:
    """``("/s", "higher")`` for ``*_per_s``, ``("ms", "lower")`` for ``*_ms`` and so on."""
    last = key.rsplit(".", 1)[-1]
    for prefix, unit, better in _PREFIX_UNITS:
        if last.startswith(prefix):
            return unit, better
    for statistic in _STATISTICS:
        if last.endswith(statistic) and len(last) > len(statistic):
            last = last.removesuffix(statistic)
            break
    for suffix, unit, better in _UNITS:
        if last.endswith(suffix):
            return unit, better
    return "", ""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float], prefix: str = "") -> dict[str, float]:
    """``p50_ms`` and ``p99_ms`` of latencies given in seconds."""
    return {
        f"{prefix}p50_ms": percentile(seconds, 50) * 1000.0,
        f"{prefix}p99_ms": percentile(seconds, 99) * 1000.0,
    }


async def drive(
    operation: Callable[[], Awaitable[object]],
    *,
    total: int,
    seconds: float,
    concurrency: int = 1,
) -> tuple[int, float, list[float]]:
    """Call ``operation`` from ``concurrency`` callers until ``total`` calls were made or
    ``seconds`` passed; returns (calls, elapsed seconds, latency of each call)."""
    latencies: list[float] = []
    remaining = total
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            sent = time.perf_counter()
            await operation()
            latencies.append(time.perf_counter() - sent)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(latencies), time.perf_counter() - started, latencies


class Skip(Exception):
    """Raised anywhere in a group or case: it is reported as skipped with the reason."""


@dataclass
class Figure:
    name: str
    runs: list[float] = field(default_factory=list)
    reference: str | None = None
    note: str = ""

    @property
    def unit(self) -> str:
        return unit_of(self.name)[0]

    @property
    def better(self) -> str:
        return unit_of(self.name)[1]

    def _finite(self) -> list[float]:
        return [v for v in self.runs if math.isfinite(v)]

    @property
    def median(self) -> float:
        finite = self._finite()
        return statistics.median(finite) if finite else math.nan

    @property
    def min(self) -> float:
        finite = self._finite()
        return min(finite) if finite else math.nan

    @property
    def max(self) -> float:
        finite = self._finite()
        return max(finite) if finite else math.nan


@dataclass
class GroupResult:
    name: str
    status: str = "ok"  # ok | partial | skipped | failed
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    figures: dict[str, Figure] = field(default_factory=dict)


class Bench:
    """What a group gets: its settings and the methods to record figures and notes."""

    def __init__(
        self,
        group: str,
        *,
        quick: bool,
        repeats: int,
        workdir: Path,
        postgres_url: str,
        log: Callable[[str], None],
    ) -> None:
        self.group = group
        self.quick = quick
        self.repeats = repeats
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.log = log
        self.result = GroupResult(group)
        # Resources shared by the groups of one run (quick mode: one suite per database),
        # closed by the runner at the end; None when every group starts its own.
        self.deadline = math.inf  # time.monotonic() at which the group's budget ends
        self.shared: dict[str, Any] | None = None
        self.shared_stack: AsyncExitStack | None = None

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def time_left(self) -> float:
        """Seconds until the group's budget ends."""
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        self.log(f"  note: {text}")
        self.result.notes.append(text)

    def skip(self, case: str, reason: str) -> None:
        """Record that ``case`` did not run (the group goes on)."""
        self.note(f"{case}: skipped: {reason}")

    def figure(self, case: str, key: str) -> Figure:
        name = f"{self.group}.{case}.{key}"
        figure = self.result.figures.get(name)
        if figure is None:
            figure = self.result.figures[name] = Figure(name)
        return figure

    def record(
        self, case: str, values: Values, references: Mapping[str, str] | None = None
    ) -> None:
        """Add one run's ``values`` to the figures of ``case``."""
        for key, value in values.items():
            figure = self.figure(case, key)
            figure.runs.append(float(value))
            if references and key in references:
                figure.reference = references[key]

    async def measure(
        self,
        case: str,
        once: Callable[[], Awaitable[Values]],
        *,
        repeats: int | None = None,
        references: Mapping[str, str] | None = None,
    ) -> bool:
        """Run ``once`` ``repeats`` times and record every run; False when it failed.

        A :class:`Skip` or an error stops this case only; it is noted and the group
        goes on with its next case.
        """
        count = repeats or self.repeats
        for index in range(count):
            started = time.monotonic()
            try:
                values = await once()
            except Skip as skip:
                self.skip(case, str(skip))
                return False
            except Exception as exc:
                self.note(f"{case}: failed in run {index + 1}: {exc!r}")
                self.log(traceback.format_exc(limit=6))
                self.result.status = "partial"
                return False
            self.record(case, values, references)
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
            self.log(
                f"  {case} run {index + 1}/{count} ({time.monotonic() - started:.1f}s): {shown}"
            )
        return True


# --------------------------------------------------------------------------- report


def _fmt(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def all_figures(groups: Iterable[GroupResult]) -> dict[str, Figure]:
    figures: dict[str, Figure] = {}
    for group in groups:
        figures.update(group.figures)
    return figures


def table(groups: Sequence[GroupResult]) -> str:
    """The figures of every group as a plain-text table, with reference and ratio."""
    figures = all_figures(groups)
    header = ("figure", "median", "min", "max", "unit", "n", "reference", "ref median", "ratio")
    rows: list[tuple[str, ...]] = []
    for group in groups:
        status = group.status if group.status != "ok" else ""
        rows.append((f"[{group.name}] {status} ({group.seconds:.0f}s)".replace("  ", " "),))
        for figure in group.figures.values():
            reference = figures.get(figure.reference) if figure.reference else None
            ref_median = reference.median if reference else math.nan
            ratio = figure.median / ref_median if reference and ref_median else math.nan
            rows.append(
                (
                    "  " + figure.name.removeprefix(group.name + "."),
                    _fmt(figure.median),
                    _fmt(figure.min),
                    _fmt(figure.max),
                    figure.unit,
                    str(len(figure.runs)),
                    figure.reference or "",
                    _fmt(ref_median) if figure.reference else "",
                    (f"{ratio:.2f}x" if math.isfinite(ratio) else "-") if figure.reference else "",
                )
            )
        rows.extend((f"  ! {note}",) for note in group.notes)
    widths = [len(h) for h in header]
    for row in rows:
        if len(row) == len(header):
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        if len(row) == len(header):
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(w) for c, w in zip(row[1:4], widths[1:4], strict=True)]
            cells += [c.ljust(w) for c, w in zip(row[4:7], widths[4:7], strict=True)]
            cells += [c.rjust(w) for c, w in zip(row[7:], widths[7:], strict=True)]
            lines.append("  ".join(cells).rstrip())
        else:
            lines.append(row[0])
    return "\n".join(lines)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def to_json(groups: Sequence[GroupResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    figures = all_figures(groups)
    out: dict[str, Any] = dict(meta)
    out["groups"] = {}
    for group in groups:
        entries = {}
        for figure in group.figures.values():
            entry: dict[str, Any] = {
                "unit": figure.unit,
                "better": figure.better,
                "median": _number(figure.median),
                "min": _number(figure.min),
                "max": _number(figure.max),
                "runs": [_number(v) for v in figure.runs],
            }
            reference = figures.get(figure.reference) if figure.reference else None
            if figure.reference:
                entry["reference"] = figure.reference
                if reference is not None and reference.median:
                    entry["reference_median"] = _number(reference.median)
                    entry["ratio"] = _number(figure.median / reference.median)
            entries[figure.name] = entry
        out["groups"][group.name] = {
            "status": group.status,
            "seconds": round(group.seconds, 1),
            "notes": group.notes,
            "figures": entries,
        }
    return out
