"""Micro-benchmark: create + publish a 1,000-step definition through the application layer.

SQLite (WAL, the embedded default) in a temporary folder; the handlers run in one
transaction each, as the service runs them (repository, outbox fact with the full
definition), without gRPC. ``run(quick)`` returns medians in milliseconds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from trinity_definition.application.commands import CreateDraft, PublishDefinition
from trinity_definition.application.handlers import create_draft, publish_definition
from trinity_definition.bootstrap import MIGRATIONS, environment
from trinity_definition.infrastructure.transaction import SqlDefinitionTransaction
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.sql_unit_of_work import SqlUnitOfWork
from trinity_process_model.model import (
    AgentTaskConfig,
    GatewayConfig,
    GatewayType,
    ProcessSpec,
    Route,
    Step,
)

STEPS = 1_000


def big_spec(steps: int = STEPS, name: str = "bench-1000") -> ProcessSpec:
    """A chain of agent tasks with templates, and an exclusive gateway every 50 steps."""
    out: list[Step] = []
    for i in range(steps):
        depends = (f"s{i - 1}",) if i else ()
        if i % 50 == 49:
            config: Any = GatewayConfig(
                GatewayType.EXCLUSIVE,
                (
                    Route(f"s{i - 10}", f"steps.s{i - 1}.output == 'again'", max_iterations=3),
                    Route(f"s{i + 1}", is_default=True)
                    if i + 1 < steps
                    else Route(f"s{i - 1}", "true", max_iterations=2),
                ),
            )
        else:
            config = AgentTaskConfig(
                "worker", f"Step {i}: continue from {{{{ steps.s{max(i - 1, 0)}.output }}}}"
            )
        out.append(Step(f"s{i}", config, depends_on=depends, timeout=timedelta(minutes=10)))
    return ProcessSpec(name=name, steps=tuple(out), description="benchmark")


async def run(quick: bool, *, steps: int = STEPS) -> dict[str, Any]:
    iterations = 3 if quick else 10
    env = environment()
    spec = big_spec(steps)
    create_ms: list[float] = []
    publish_ms: list[float] = []
    validate_ms: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}")
        try:
            await run_migrations(engine, MIGRATIONS)
            uow = SqlUnitOfWork(engine, SqlDefinitionTransaction)
            for _ in range(iterations + 1):  # the first round warms caches up
                t0 = time.perf_counter()
                draft = await uow.write(
                    lambda tx: create_draft(CreateDraft(spec, "bench"), tx.definitions, env)
                )
                t1 = time.perf_counter()
                published = await uow.write(
                    lambda tx, draft=draft: publish_definition(  # type: ignore[misc]
                        PublishDefinition(draft.id), tx.definitions, env
                    )
                )
                t2 = time.perf_counter()
                violations = env.validate(spec)
                t3 = time.perf_counter()
                if violations:
                    raise AssertionError(f"benchmark spec is invalid: {violations[:3]}")
                assert published.version is not None
                create_ms.append((t1 - t0) * 1000)
                publish_ms.append((t2 - t1) * 1000)
                validate_ms.append((t3 - t2) * 1000)
        finally:
            await engine.dispose()
    create_ms, publish_ms, validate_ms = create_ms[1:], publish_ms[1:], validate_ms[1:]
    totals = [c + p for c, p in zip(create_ms, publish_ms, strict=True)]
    return {
        "benchmark": f"definition.create_publish_{steps}_steps",
        "steps": steps,
        "iterations": iterations,
        "database": "sqlite",
        "create_ms_median": round(statistics.median(create_ms), 2),
        "publish_ms_median": round(statistics.median(publish_ms), 2),
        "validate_ms_median": round(statistics.median(validate_ms), 2),
        "total_ms_median": round(statistics.median(totals), 2),
        "total_ms_max": round(max(totals), 2),
    }


if __name__ == "__main__":
    print(asyncio.run(run(quick=True)))
