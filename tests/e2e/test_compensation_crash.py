"""kill -9 of the execution service during compensation: each compensation runs once
(SQLite and PostgreSQL).

Every execution completes three compensable steps and then fails, so their undos run
c, b, a. The undo of ``b`` waits for a gate file: the service is killed when every
execution has undone ``c`` and waits on ``b``, every undo request accepted by the work
service (conditions, whatever the timing). While
it is down the gate opens (the work service reports those undos meanwhile), and every
compensation request already sent is made to look unsent (its dispatch pending again,
as if the crash came between sending it and recording that), so the restarted service
sends each again. The work service's idempotency and the fact matching must still make
each undo run, and be recorded, exactly once, in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1 import facts_pb2 as execution_facts
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_execution.infrastructure.tables import dispatches
from trinity_platform.config import normalize_database_url
from trinity_platform.db import create_engine
from trinity_platform.envelope import decode

from .conftest import Client

pytestmark = pytest.mark.e2e

EXECUTIONS = 8
PROCESS = """
name: undo-after-crash
steps:
  - id: a
    agent_task: {agent: worker, message: "a"}
    compensate:
      agent_task: {agent: undoer, message: "{{ execution.id }} a"}
  - id: b
    depends_on: [a]
    agent_task: {agent: worker, message: "b"}
    compensate:
      agent_task: {agent: gated_undoer, message: "{{ execution.id }} b"}
  - id: c
    depends_on: [b]
    agent_task: {agent: worker, message: "c"}
    compensate:
      agent_task: {agent: undoer, message: "{{ execution.id }} c"}
  - id: ship
    depends_on: [c]
    agent_task: {agent: broken, message: "ship"}
"""
EXECUTOR = """
concurrency: 32
agents:
  worker:
    backend: script
    file: replies.yaml
  broken:
    backend: command
    command: [sh, -c, 'exit 3']
  undoer:
    backend: command
    command: [sh, -c, 'echo "$1" >> undo.log; echo undone', undo, "{message}"]
    cwd: .
  gated_undoer:
    backend: command
    command:
      - sh
      - -c
      - 'while [ ! -e gate ]; do sleep 0.05; done; echo "$1" >> undo.log; echo undone'
      - undo
      - "{message}"
    cwd: .
"""
S = execution_pb2
STEP_COMPENSATED = S.STEP_COMPENSATION_STATUS_COMPENSATED


def undo_waits_on_b(execution: execution_pb2.Execution) -> bool:
    steps = {s.step_id: s.status for s in execution.compensation.steps}
    return (
        execution.status == S.EXECUTION_STATUS_COMPENSATING
        and steps.get("c") == STEP_COMPENSATED
        and steps.get("b") == S.STEP_COMPENSATION_STATUS_RUNNING
    )


async def resend_compensations(suite) -> int:  # type: ignore[no-untyped-def]
    """Make every compensation request sent look unsent (the service is down)."""
    async with _execution_db(suite) as conn:
        changed = await conn.execute(
            update(dispatches)
            .where(
                dispatches.c.kind == "request_work",
                dispatches.c.key.like("%/compensate/%"),
                dispatches.c.status == "done",
            )
            .values(status="pending", next_attempt_at=dispatches.c.created_at)
        )
        return int(changed.rowcount)


async def undo_requests_accepted(suite) -> int:  # type: ignore[no-untyped-def]
    async with _execution_db(suite) as conn:
        found = await conn.scalar(
            select(func.count())
            .select_from(dispatches)
            .where(dispatches.c.key.like("%/compensate/%"), dispatches.c.status == "done")
        )
        return int(found or 0)


async def sent_more_than_once(suite) -> int:  # type: ignore[no-untyped-def]
    async with _execution_db(suite) as conn:
        found = await conn.scalar(
            select(func.count())
            .select_from(dispatches)
            .where(dispatches.c.key.like("%/compensate/%"), dispatches.c.attempts >= 2)
        )
        return int(found or 0)


@asynccontextmanager
async def _execution_db(suite) -> AsyncIterator[AsyncConnection]:  # type: ignore[no-untyped-def]
    """A transaction on the execution service's database (SQLite or PostgreSQL)."""
    url = suite.database_urls.get("execution") or f"sqlite:///{suite.data_dir}/execution.db"
    engine = create_engine(normalize_database_url(url))
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def test_kill_9_during_compensation_runs_each_compensation_once(
    make_suite, stream_reader, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "replies.yaml").write_text('replies:\n  - output: "ok"\n')
    config = tmp_path / "executor.yaml"
    config.write_text(EXECUTOR)
    suite = make_suite(executor_config=config)
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    client = Client(suite)
    try:
        await client.publish(PROCESS)
        ids = [await client.trigger("undo-after-crash") for _ in range(EXECUTIONS)]
        for execution_id in ids:
            await client.wait(execution_id, undo_waits_on_b, timeout=180)
        deadline = time.monotonic() + 60
        while await undo_requests_accepted(suite) < 2 * EXECUTIONS:  # c's and b's, every one
            assert time.monotonic() < deadline, "the undo requests were not all accepted"
            await asyncio.sleep(0.1)

        suite.kill("execution")  # SIGKILL in the middle of every compensation
        (tmp_path / "gate").write_text("open")  # b's undos finish while it is down
        resent = await resend_compensations(suite)
        assert resent == 2 * EXECUTIONS  # c's and b's undo requests of every execution
        suite.start_service("execution")
        await asyncio.to_thread(suite.wait_serving, suite.ports["execution"], "execution")

        done = [
            await client.wait(
                execution_id,
                lambda e: (
                    e.status in (S.EXECUTION_STATUS_FAILED, S.EXECUTION_STATUS_COMPENSATION_FAILED)
                ),
                timeout=180,
            )
            for execution_id in ids
        ]
    finally:
        await client.close()
    for execution in done:
        assert execution.status == S.EXECUTION_STATUS_FAILED, execution
        assert [(s.step_id, s.status, s.attempt) for s in execution.compensation.steps] == [
            ("c", STEP_COMPENSATED, 1),
            ("b", STEP_COMPENSATED, 1),
            ("a", STEP_COMPENSATED, 1),
        ]

    # Each undo ran once, in reverse order of completion.
    lines = (tmp_path / "undo.log").read_text().splitlines()
    assert Counter(lines) == Counter({f"{e} {s}": 1 for e in ids for s in "abc"})
    for execution_id in ids:
        mine = [line.split()[1] for line in lines if line.startswith(execution_id)]
        assert mine == ["c", "b", "a"], (execution_id, mine)

    assert await sent_more_than_once(suite) >= resent  # each request really was sent a second time

    async def published() -> tuple[Counter[tuple[str, str]], list]:
        requested: Counter[tuple[str, str]] = Counter()
        for envelope in await stream_reader("TRINITY_PROCESS_WORK_FACTS"):
            fact = decode(envelope)
            if isinstance(fact, work_facts.WorkRequested):
                ref = fact.correlation
                requested[(ref.execution_id, ref.step_id)] += 1
        return requested, await stream_reader("TRINITY_PROCESS_EXECUTION_FACTS")

    # The relays publish after the commits the test saw: wait until every execution's
    # last fact is on the stream (a condition, not a pause), then count.
    deadline = time.monotonic() + 60
    while True:
        requested, envelopes = await published()
        ended = [decode(e) for e in envelopes]
        last = {
            f.execution.execution_id for f in ended if isinstance(f, execution_facts.ProcessFailed)
        }
        if set(ids) <= last:
            break
        assert time.monotonic() < deadline, f"no ProcessFailed yet for {set(ids) - last}"
        await asyncio.sleep(0.1)
    for execution_id in ids:
        for step in "abc":
            assert requested[(execution_id, f"{step}/compensate")] == 1, (execution_id, step)
    assert max(Counter(e.id for e in envelopes).values()) == 1
    compensated: Counter[tuple[str, str]] = Counter()
    ends: Counter[str] = Counter()
    for envelope in envelopes:
        fact = decode(envelope)
        if isinstance(fact, execution_facts.StepCompensated):
            compensated[(fact.execution.execution_id, fact.step_id)] += 1
        elif isinstance(
            fact, execution_facts.CompensationCompleted | execution_facts.ProcessFailed
        ):
            ends[fact.execution.execution_id] += 1
    assert compensated == Counter({(e, s): 1 for e in ids for s in "abc"})
    assert ends == Counter(dict.fromkeys(ids, 2))
