"""Run the benchmarks: ``make bench`` (full, < 15 min) or ``make bench-quick`` (< 2 min).

    python -m tests.bench.run [--quick] [--only floor,facts] [--repeats N] [--output DIR]

Prints a table to stdout (progress to stderr) and writes the figures as JSON to
``bench-results/<timestamp>.json`` and ``bench-results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trinity_platform.logs import configure_logging

from .core import Bench, GroupResult, Skip, table, to_json
from .infra import REPO_ROOT, postgres_admin_url


@dataclass(frozen=True)
class Group:
    name: str
    module: str
    about: str
    budget: tuple[float, float]  # seconds: quick, full
    repeats: tuple[int, int]  # runs per case: quick, full


GROUPS: tuple[Group, ...] = (
    # name, module, about, time budget (quick, full) in s, runs per case (quick, full)
    Group(
        "floor", "tests.bench.floor", "raw JetStream, gRPC, SQLite, PostgreSQL", (15, 140), (3, 5)
    ),
    Group("facts", "tests.bench.facts", "outbox relay throughput and lag", (10, 100), (1, 3)),
    Group("micro", "tests.bench.micro", "micro-benchmarks of the packages", (20, 120), (1, 1)),
    Group(
        "commands", "tests.bench.commands", "TriggerProcess, 1 and 50 clients", (22, 120), (1, 3)
    ),
    Group("e2e", "tests.bench.e2e", "5-step agent process end to end", (28, 220), (1, 3)),
    Group("scaling", "tests.bench.scaling", "per-step cost vs size and load", (22, 400), (1, 3)),
    Group(
        "replicas",
        "tests.bench.replicas",
        "one execution replica, then two, on PostgreSQL",
        (60, 150),
        (1, 3),
    ),
    Group(
        "admission",
        "tests.bench.admission",
        "50 clients against a bounded admission",
        (25, 90),
        (1, 2),
    ),
)
# The groups of a run stop within this; teardown and the report take a few seconds more.
TOTAL_LIMIT = {True: 108.0, False: 14.5 * 60}


def _log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    memory_gib = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


async def run_group(
    group: Group,
    *,
    quick: bool,
    repeats: int | None,
    workdir: Path,
    budget: float,
    shared: dict[str, Any] | None,
    shared_stack: AsyncExitStack | None,
) -> GroupResult:
    bench = Bench(
        group.name,
        quick=quick,
        repeats=repeats or group.repeats[0 if quick else 1],
        workdir=workdir,
        postgres_url=postgres_admin_url(),
        log=_log,
    )
    bench.shared, bench.shared_stack = shared, shared_stack
    result = bench.result
    started = time.monotonic()
    bench.deadline = started + budget
    _log(f"[{group.name}] {group.about} (budget {budget:.0f}s)")
    try:
        module = importlib.import_module(group.module)
        await asyncio.wait_for(module.run(bench), budget)
    except Skip as skip:
        result.status = "skipped"
        bench.note(str(skip))
    except TimeoutError:
        result.status = "partial"
        bench.note(f"stopped at its time budget of {budget:.0f}s; later cases did not run")
    except ImportError as exc:
        result.status = "skipped"
        bench.note(f"cannot import {group.module}: {exc}")
    except Exception as exc:
        result.status = "failed"
        bench.note(f"failed: {exc!r}")
        import traceback

        _log(traceback.format_exc())
    if result.status == "ok" and not result.figures:
        result.status = "skipped"
    result.seconds = time.monotonic() - started
    _log(f"[{group.name}] {result.status} in {result.seconds:.0f}s")
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description="Trinity benchmarks: engine figures beside the machine's floor.",
    )
    parser.add_argument("--quick", action="store_true", help="small counts; whole run < 2 min")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these groups (comma-separated or repeated): {', '.join(g.name for g in GROUPS)}",
    )
    parser.add_argument("--repeats", type=int, help="runs per case (default: per group)")
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "bench-results",
        help="folder of the JSON results (default: bench-results/)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply every time budget by F (a slower or busy machine)",
    )
    parser.add_argument("--no-save", action="store_true", help="print only; write no JSON")
    parser.add_argument("--list", action="store_true", help="list the groups and exit")
    return parser.parse_args(argv)


async def run_groups(
    args: argparse.Namespace,
    selected: Sequence[Group],
    tmp: Path,
    shared_stack: AsyncExitStack,
    results: list[GroupResult],
    started: float,
    limit: float,
) -> None:
    # Quick mode starts one suite per database and lends it to every group that needs
    # it (a suite takes 10-20 s to start on 2 cores); full mode gives each group its own.
    shared: dict[str, Any] | None = {} if args.quick else None
    for group in selected:
        remaining = limit - (time.monotonic() - started)
        budget = min(group.budget[0 if args.quick else 1] * args.time_scale, remaining)
        if budget < 5:
            skipped = GroupResult(group.name, status="skipped")
            skipped.notes.append(f"no time left in the {limit:.0f}s limit of the whole run")
            results.append(skipped)
            continue
        workdir = tmp / group.name
        workdir.mkdir()
        results.append(
            await run_group(
                group,
                quick=args.quick,
                repeats=args.repeats,
                workdir=workdir,
                budget=budget,
                shared=shared,
                shared_stack=shared_stack if shared is not None else None,
            )
        )


def stop_on_signals() -> list[signal.Signals]:
    """SIGTERM or SIGINT cancels the run, so the teardown of what it started runs
    (a ``timeout`` or Ctrl-C must not leave suites behind). Returns the signals seen."""
    received: list[signal.Signals] = []
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if not received and task is not None:
            _log(f"{signum.name}: stopping what the benchmarks started")
            task.cancel()
        received.append(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    return received


async def main_async(args: argparse.Namespace) -> int:
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = sorted(set(names) - {g.name for g in GROUPS})
    if unknown:
        _log(f"unknown group(s): {', '.join(unknown)}; known: {', '.join(g.name for g in GROUPS)}")
        return 2
    selected = [g for g in GROUPS if not names or g.name in names]
    limit = TOTAL_LIMIT[args.quick] * args.time_scale
    load_before = os.getloadavg()
    started_at = datetime.now(UTC)
    started = time.monotonic()
    results: list[GroupResult] = []
    received = stop_on_signals()
    try:
        with tempfile.TemporaryDirectory(prefix="trinity-bench-") as tmp:
            async with AsyncExitStack() as shared_stack:
                await run_groups(args, selected, Path(tmp), shared_stack, results, started, limit)
                _log("stopping what the groups shared")
    except asyncio.CancelledError:
        if not received:
            raise
        # Every suite, NATS server and database the groups started is stopped by now:
        # their teardown ran as the cancellation unwound the exit stacks.
        _log(f"{received[0].name}: stopped; everything the benchmarks started is gone")
        return 128 + received[0].value
    seconds = time.monotonic() - started
    info = machine()
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    meta: dict[str, Any] = {
        "timestamp": started_at.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "seconds": round(seconds, 1),
        "git_commit": commit,
        "git_dirty": dirty,
        "machine": info,
        # 1-minute load average before and after: other work on the machine skews figures
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "groups_selected": [g.name for g in selected],
    }
    print()
    print(
        f"Trinity benchmarks, {meta['mode']} mode, {seconds:.0f}s, "
        f"{info['cores']} cores, {info['memory_gib']} GiB, Python {info['python']}, "
        f"commit {commit[:10]}{' (dirty)' if dirty else ''}, "
        f"load average {meta['load_average'][0]} -> {meta['load_average'][1]}"
    )
    print("ratio = median / reference median (throughput: <1 is slower; latency: >1 is slower)")
    print()
    print(table(results))
    if not args.no_save:
        document = to_json(results, meta)
        args.output.mkdir(parents=True, exist_ok=True)
        stamp = started_at.strftime("%Y%m%dT%H%M%SZ")
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        (args.output / f"{stamp}.json").write_text(text)
        (args.output / "latest.json").write_text(text)
        print(f"\nwritten: {args.output / f'{stamp}.json'} and latest.json")
    return 1 if any(r.status == "failed" for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for group in GROUPS:
            print(f"{group.name:10} {group.about}")
        return 0
    configure_logging("WARNING")  # the platform's own logs: warnings only, to stderr
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
