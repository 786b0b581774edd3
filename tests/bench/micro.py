"""Micro-benchmarks that live next to the code they measure, imported by file path.

Each module defines ``run(quick: bool) -> dict`` (sync or async), called in a
subprocess of its own (``python -m tests.bench.micro PATH [--quick]``). The dict maps
names to numbers (nested dicts are flattened with dots); a name's ending gives its
unit: ``_per_s`` (higher is better), ``_ms``, ``_us``, ``_ns``, ``_s`` (lower is
better). Other values are shown as notes. A missing module is skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from .core import Bench, Skip, Values
from .infra import REPO_ROOT

MODULES: tuple[tuple[str, str], ...] = (
    ("execution_engine", "services/execution/tests/domain/bench_engine.py"),
    ("for_each_items", "services/execution/tests/domain/bench_fanout.py"),
    ("process_validation", "libs/process_model/tests/bench_validation.py"),
    ("definition_publish", "services/definition/tests/bench_publish.py"),
)


def load(name: str, path: Path) -> ModuleType:
    """Import ``path`` as a module; its folder goes on ``sys.path`` (for sibling helpers)."""
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"trinity_bench_micro_{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def flatten(values: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, float], list[str]]:
    """Numbers under dotted keys, and everything else as ``key: value`` notes."""
    numbers: dict[str, float] = {}
    others: list[str] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            inner, notes = flatten(value, f"{name}.")
            numbers.update(inner)
            others.extend(notes)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            numbers[name] = float(value)
        else:
            others.append(f"{name}: {value}")
    return numbers, others


async def run(bench: Bench) -> None:
    for name, relative in MODULES:
        path = REPO_ROOT / relative
        if not path.exists():
            bench.skip(name, f"{relative} does not exist yet")
            continue
        notes: list[str] = []

        async def once(path: Path = path, notes: list[str] = notes) -> Values:
            numbers, others = flatten(await in_subprocess(path, bench.quick))
            notes[:] = others
            return numbers

        await bench.measure(name, once)
        for note in notes:
            bench.note(f"{name}: {note}")


async def in_subprocess(path: Path, quick: bool) -> Mapping[str, Any]:
    """``run(quick)`` of ``path`` in a fresh interpreter: a sync benchmark cannot block the
    harness, and one over the time budget is killed."""
    argv = [sys.executable, "-m", "tests.bench.micro", str(path), *(["--quick"] if quick else [])]
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        stdout, stderr = await process.communicate()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        raise
    if process.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise Skip(lines[-1] if lines else f"exited with {process.returncode}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    if not isinstance(result, Mapping):
        raise Skip(f"run() returned {type(result).__name__}, not a dict")
    return result


def main() -> None:
    """``python -m tests.bench.micro PATH [--quick]``: print ``run(quick)`` as one JSON line."""
    path, quick = Path(sys.argv[1]), "--quick" in sys.argv[2:]
    module = load(path.stem, path)
    entry = getattr(module, "run", None)
    if not callable(entry):
        sys.exit(f"{path} has no run(quick) function")
    with contextlib.redirect_stdout(sys.stderr):  # the benchmark's own prints
        result = entry(quick)
        if inspect.isawaitable(result):
            result = asyncio.run(result)  # type: ignore[arg-type]
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
