"""Where the time goes: sample the services with py-spy while the 5-step e2e load runs.

    python3 -m venv /tmp/py-spy && /tmp/py-spy/bin/pip install py-spy   # ad hoc, not a dependency
    .venv/bin/python -m tests.bench.profile --py-spy /tmp/py-spy/bin/py-spy \
        [--seconds 20] [--clients 20] [--postgres] [--load trigger]

(Installed into the project's venv, py-spy is removed by the next ``make``: the venv
is synced to the lock.)

Starts a suite like the e2e group does, keeps ``--clients`` executions in flight,
records each service process with ``py-spy record --format raw`` and prints, per
process, the share of samples by package and the functions with the most time
(inclusive and self). Raw stacks are kept in ``bench-results/profile-<name>.txt``.

``--load trigger``: instead, ``--clients`` callers trigger the commands group's
parked process (an hour-long timer) again and again without waiting for it, and the
CPU is shown per trigger.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .core import Bench
from .infra import REPO_ROOT, postgres_admin_url
from .suite import ClosedLoop, RunningSuite, agent_chain, parked, process_cpu_seconds, running_suite

PROCESSES = ("execution", "work", "executor-0", "definition")
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def package_of(path: str) -> str:
    """``sqlalchemy``, ``grpc``, ``trinity_execution``, ``asyncio`` ... from a file path."""
    parts = Path(path).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            index = parts.index(marker)
            return parts[index + 1] if index + 1 < len(parts) else path
    for index, part in enumerate(parts):
        if part.startswith("trinity_") or part == "trinity":
            return part
        if part.startswith("python3") and index + 1 < len(parts):
            return parts[index + 1].removesuffix(".py")
    return Path(path).name


def summarize(raw: str, top: int = 12) -> str:
    """Package shares and the top functions of py-spy's raw (collapsed) stacks."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        seen = set()
        for frame in frames:
            if frame not in seen:
                inclusive[frame] += count
                seen.add(frame)
        leaf = frames[-1]
        self_time[leaf] += count
        match = _FRAME.match(leaf)
        packages[package_of(match.group("file")) if match else leaf] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples; by package (self time):"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in packages.most_common(top)]
    lines.append("  functions, inclusive:")
    interesting = [
        (f, n) for f, n in inclusive.most_common() if "trinity" in f or "site-packages" in f
    ]
    lines += [f"    {100 * n / total:5.1f}%  {_short(f)}" for f, n in interesting[:top]]
    lines.append("  functions, self:")
    lines += [f"    {100 * n / total:5.1f}%  {_short(f)}" for f, n in self_time.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "/services/", "/libs/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('function')} ({path})"


class TriggerLoop:
    """``clients`` callers, each triggering the parked process again and again (the
    commands group's load); ``steps_completed`` counts the triggers answered."""

    def __init__(self, suite: RunningSuite, process_name: str, clients: int) -> None:
        self._suite = suite
        self._process = process_name
        self._clients = clients
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.steps_completed = 0

    async def _client(self) -> None:
        while not self._stop.is_set():
            await self._suite.trigger(self._process)
            self.steps_completed += 1

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self._clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def profile(
    seconds: float, clients: int, kind: str, py_spy: str | None, gil: bool, load_kind: str
) -> None:
    py_spy = (
        py_spy
        or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        or shutil.which("py-spy")
    )
    if py_spy is None:
        sys.exit("py-spy not found: install it ad hoc (it is not a dependency), see --help")
    out_dir = REPO_ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trinity-profile-") as tmp:
        bench = Bench(
            "profile",
            quick=True,
            repeats=1,
            workdir=Path(tmp),
            postgres_url=postgres_admin_url(),
            log=lambda text: print(text, file=sys.stderr),
        )
        async with running_suite(bench, kind) as suite:
            load: ClosedLoop | TriggerLoop
            if load_kind == "trigger":
                name = "bench-parked"
                await suite.publish(parked(name))
                await suite.trigger(name, retry_for=30)
                triggers = TriggerLoop(suite, name, clients)
                load, done = triggers, lambda: triggers.steps_completed
            else:
                name = "bench-agent-5"
                await suite.publish(agent_chain(name, 5))
                await suite.check_runs(name)
                load, done = ClosedLoop(suite, name, clients), lambda: suite.tracker.steps_completed
            load.start()
            try:
                await asyncio.sleep(3)
                pids = {p: suite.pids[p] for p in PROCESSES if p in suite.pids}
                steps_before = done()
                cpu_before = {name: process_cpu_seconds(pid) for name, pid in suite.pids.items()}
                recorders = {
                    process: await asyncio.create_subprocess_exec(
                        py_spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "--nonblocking",
                        *(["--gil"] if gil else []),
                        "--output",
                        str(out_dir / f"profile-{process}.txt"),
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                    for process, pid in pids.items()
                }
                await asyncio.gather(*(r.wait() for r in recorders.values()))
                steps = done() - steps_before
                cpu_used = {
                    name: process_cpu_seconds(pid) - cpu_before[name]
                    for name, pid in suite.pids.items()
                }
            finally:
                await load.stop()
    what = "threads holding the GIL (Python CPU)" if gil else "all threads (wall clock)"
    unit = "trigger" if load_kind == "trigger" else "step"
    doing = "triggering" if load_kind == "trigger" else "executions in flight"
    print(f"{kind}, {clients} {doing}: {steps / seconds:.1f} {unit}s/s while sampled")
    print(f"samples: {what}, 50 per second")
    # py-spy's own sampling is not counted: it runs in its own processes.
    per_step = {name: 1000 * cpu / max(steps, 1) for name, cpu in cpu_used.items()}
    print(f"CPU ms per {unit} (all threads, /proc): {sum(per_step.values()):.2f} in all")
    for name, ms in sorted(per_step.items(), key=lambda item: -item[1]):
        print(f"  {ms:6.2f}  {name}")
    for process in recorders:
        path = out_dir / f"profile-{process}.txt"
        print(f"\n[{process}] {path}")
        print(summarize(path.read_text() if path.exists() else ""))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--py-spy", help="the py-spy binary (default: from the venv or PATH)")
    parser.add_argument(
        "--load",
        choices=("e2e", "trigger"),
        default="e2e",
        help="e2e: 5-step executions in flight (default); trigger: callers triggering a parked"
        " process",
    )
    parser.add_argument(
        "--wall",
        action="store_true",
        help="sample every thread, waiting ones too (default: only the thread holding the GIL,"
        " i.e. Python CPU time)",
    )
    args = parser.parse_args()
    kind = "postgres" if args.postgres else "sqlite"
    asyncio.run(profile(args.seconds, args.clients, kind, args.py_spy, not args.wall, args.load))


if __name__ == "__main__":
    main()
