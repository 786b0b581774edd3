"""The command dispatcher writes the outcomes of the sends of a round together: each row
gets its own outcome (done with the receiver's id, retried, refused), in far fewer
transactions than rows."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.dispatch import (
    DONE,
    PENDING,
    CommandDispatcher,
    Dispatch,
    DispatchTable,
    PermanentRefusal,
)

METADATA = MetaData()
COMMANDS = Table(
    "bench_dispatches",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("owner_id", String(64), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("result_id", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
SPEC = DispatchTable(COMMANDS, aggregate_column="owner_id", result_column="result_id")


class Unavailable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
        )


async def test_the_outcomes_of_a_round_are_written_together(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
        await conn.execute(
            insert(COMMANDS),
            [
                {
                    "key": f"k-{i}",
                    "owner_id": f"o-{i}",
                    "payload": str(i).encode(),
                    "status": PENDING,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for i in range(60)
            ],
        )

    async def send(row: Dispatch) -> str:
        number = int(row.payload)
        if number % 10 == 1:
            raise Unavailable()
        if number % 10 == 2:
            raise PermanentRefusal("NO_WAY", "refused for good")
        return f"result-{number}"

    refused: list[str] = []

    async def on_refused(row: Dispatch, code: str, message: str) -> None:
        refused.append(row.key)

    dispatcher = CommandDispatcher(engine, SPEC, {"command": send}, on_refused)
    commits = 0

    def count(_conn: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(engine.sync_engine, "commit", count)
    try:
        assert await dispatcher.dispatch_once() == 60
    finally:
        event.remove(engine.sync_engine, "commit", count)

    async with engine.connect() as conn:
        rows = {
            r.key: r for r in (await conn.execute(select(COMMANDS).order_by(COMMANDS.c.id))).all()
        }
    for i in range(60):
        row = rows[f"k-{i}"]
        if i % 10 == 1:  # retried later, one attempt counted
            assert (row.status, row.attempts, row.result_id) == (PENDING, 1, None)
            assert row.last_error.startswith("UNAVAILABLE")
        elif i % 10 == 2:
            assert (row.status, row.attempts, row.last_error) == (
                "rejected",
                1,
                "NO_WAY: refused for good",
            )
        else:
            assert (row.status, row.attempts, row.result_id) == (DONE, 1, f"result-{i}")
    assert sorted(refused) == sorted(f"k-{i}" for i in range(60) if i % 10 == 2)
    # The claim, the retries (one each), and the outcomes of the sends together.
    retries = 6
    assert commits <= 1 + retries + 2, commits
