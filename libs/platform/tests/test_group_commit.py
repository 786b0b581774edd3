"""Group commit in the unit of work, on SQLite and PostgreSQL: grouped writes handed in
together share one commit, each answered with its own result; each stays idempotent by
its key; one write's refusal (its own error, a key reused, a unique key taken) is
answered to it alone while the others commit. Counted (commits, rows), never timed."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from sqlalchemy import Column, MetaData, String, Table, event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform.db import IDEMPOTENCY, OUTBOX
from trinity_platform.errors import Conflict, FailedPrecondition
from trinity_platform.group_commit import GroupCommit, Refused
from trinity_platform.idempotency import KEY_REUSED
from trinity_platform.outbox import OutboxSignal
from trinity_platform.sql_unit_of_work import SqlTransaction, SqlUnitOfWork
from trinity_platform.unit_of_work import EventMessage, Idempotency, NewEvents, RetryPolicy

METADATA = MetaData()
STARTED = Table(
    "group_started",
    METADATA,
    Column("id", String(64), primary_key=True),
    Column("caller", String(64), nullable=False),
)
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


class StartTransaction(SqlTransaction):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__(conn)
        self.started: list[str] = []

    async def start(self, item_id: str) -> str:
        await self.conn.execute(insert(STARTED).values(id=item_id, caller=CALLER.get()))
        self.started.append(item_id)
        return item_id

    async def new_events(self) -> list[NewEvents]:
        started, self.started = self.started, []
        return [
            NewEvents("started", i, 1, [EventMessage(StringValue(value=i), "test.started")])
            for i in started
        ]


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    async with engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    yield engine


@contextmanager
def commits(engine: AsyncEngine) -> Iterator[list[int]]:
    counted = [0]

    def count(_conn: object) -> None:
        counted[0] += 1

    event.listen(engine.sync_engine, "commit", count)
    try:
        yield counted
    finally:
        event.remove(engine.sync_engine, "commit", count)


async def rows(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def keyed(key: str, fingerprint: str = "f") -> Idempotency[StartTransaction, str]:
    async def load(_tx: StartTransaction, reference: str) -> str:
        return reference

    return Idempotency.by_reference(
        "test.start", key, fingerprint, reference=lambda result: result, load=load
    )


def start(
    uow: SqlUnitOfWork[StartTransaction], item_id: str, key: str = "", fingerprint: str = "f"
) -> asyncio.Task[str]:
    """A grouped write from its own caller (its own context: CALLER is the item id)."""

    async def call() -> str:
        CALLER.set(item_id)
        return await uow.write(
            lambda tx: tx.start(item_id), idempotency=keyed(key, fingerprint), grouped=True
        )

    return asyncio.get_running_loop().create_task(call())


async def test_concurrent_grouped_writes_share_commits(db: AsyncEngine) -> None:
    signal = OutboxSignal()
    uow = SqlUnitOfWork(db, StartTransaction, signal=signal, name="test")
    with commits(db) as counted:
        answers = await asyncio.gather(*(start(uow, f"e-{i}", f"k-{i}") for i in range(20)))
    assert answers == [f"e-{i}" for i in range(20)]
    assert counted[0] < 20, counted[0]  # handed in together: far fewer commits than writes
    assert counted[0] <= 2, counted[0]
    assert await rows(db, STARTED) == await rows(db, OUTBOX) == await rows(db, IDEMPOTENCY) == 20
    assert signal.is_set()
    async with db.connect() as conn:  # each body ran in its own caller's context
        callers = dict((await conn.execute(select(STARTED.c.id, STARTED.c.caller))).all())
    assert callers == {f"e-{i}": f"e-{i}" for i in range(20)}


async def test_a_lone_grouped_write_commits_at_once(db: AsyncEngine) -> None:
    uow = SqlUnitOfWork(db, StartTransaction, name="test")
    with commits(db) as counted:
        assert await start(uow, "alone", "k") == "alone"
    assert counted[0] == 1


async def test_grouped_writes_stay_idempotent_by_their_keys(db: AsyncEngine) -> None:
    uow = SqlUnitOfWork(db, StartTransaction, name="test")
    first = await asyncio.gather(*(start(uow, f"e-{i}", f"k-{i}") for i in range(5)))
    # Replays of every key, and two new writes sharing one key in the same group.
    with commits(db) as counted:
        again = await asyncio.gather(
            *(start(uow, f"other-{i}", f"k-{i}") for i in range(5)),
            start(uow, "twin", "k-twin"),
            start(uow, "twin-again", "k-twin"),
        )
    assert again[:5] == first  # the first answers, not the new bodies'
    assert again[5:] == ["twin", "twin"]  # the second is the first's replay
    assert counted[0] <= 2, counted[0]
    assert await rows(db, STARTED) == await rows(db, IDEMPOTENCY) == 6


async def test_one_refusal_in_a_group_is_that_callers_alone(db: AsyncEngine) -> None:
    uow = SqlUnitOfWork(db, StartTransaction, name="test", retry=RetryPolicy(attempts=1))
    await start(uow, "taken", "k-taken")

    async def refused(tx: StartTransaction) -> str:
        await tx.start("written-then-refused")  # its partial write must go with it
        raise FailedPrecondition("not now", reason="NOT_NOW")

    with commits(db) as counted:
        results = await asyncio.gather(
            start(uow, "a", "k-a"),
            uow.write(refused, grouped=True),
            start(uow, "b", "k-taken", fingerprint="another"),  # key reused
            start(uow, "taken", "k-c"),  # a unique key another write took: Conflict
            start(uow, "c", "k-d"),
            return_exceptions=True,
        )
    assert results[0] == "a" and results[4] == "c"
    assert isinstance(results[1], FailedPrecondition) and results[1].reason == "NOT_NOW"
    assert isinstance(results[2], FailedPrecondition) and results[2].reason == KEY_REUSED
    assert isinstance(results[3], Conflict)
    assert counted[0] == 1, counted[0]  # the others still share one commit
    async with db.connect() as conn:
        ids = set((await conn.execute(select(STARTED.c.id))).scalars())
    assert ids == {"taken", "a", "c"}
    assert await rows(db, OUTBOX) == 3


async def test_a_refused_write_wakes_nobody_and_the_others_wake_after_commit(
    db: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(db, StartTransaction, name="test")
    woken: list[str] = []

    def waking(item_id: str, fail: bool) -> asyncio.Task[str]:
        async def body(tx: StartTransaction) -> str:
            tx.after_commit(lambda: woken.append(item_id))
            await tx.start(item_id)
            if fail:
                raise FailedPrecondition("refused")
            return item_id

        return asyncio.get_running_loop().create_task(uow.write(body, grouped=True))

    results = await asyncio.gather(
        waking("x", False), waking("y", True), waking("z", False), return_exceptions=True
    )
    assert results[0] == "x" and results[2] == "z" and isinstance(results[1], FailedPrecondition)
    assert sorted(woken) == ["x", "z"]


async def test_a_group_commit_gives_each_item_its_answer() -> None:
    """The mechanism alone: items handed in while a write runs go in the next one."""
    groups: list[list[int]] = []
    release = asyncio.Event()

    async def write(items: list[int]) -> list[int | Refused]:
        groups.append(items)
        if len(groups) == 1:
            await release.wait()
        return [Refused(ValueError(str(i))) if i % 3 == 0 else i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(write)
    first = asyncio.ensure_future(group.submit(1))
    while not groups:  # the first write is running
        await asyncio.sleep(0)
    later = [asyncio.ensure_future(group.submit(i)) for i in range(2, 8)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 10
    results = await asyncio.gather(*later, return_exceptions=True)
    assert groups == [[1], [2, 3, 4, 5, 6, 7]]
    assert [r if isinstance(r, int) else str(r) for r in results] == [20, "3", 40, 50, "6", 70]


async def test_a_failed_group_write_is_every_callers_error() -> None:
    async def write(items: list[int]) -> list[int | Refused]:
        raise OSError("disk gone")

    group: GroupCommit[int, int] = GroupCommit(write)
    results = await asyncio.gather(*(group.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert await asyncio.gather(group.submit(9), return_exceptions=True)  # still serves
