"""SQLite statements run on the event loop: a lock held elsewhere is waited for on the
loop (other coroutines go on), a transaction goes ahead once the lock is free, and a
lock held past the busy timeout fails as "database is locked" (Unavailable)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from trinity_platform import errors
from trinity_platform.db import create_engine
from trinity_platform.db_errors import classify


def _locked(path: Path) -> sqlite3.Connection:
    """Another connection (as another process would) holding the write lock."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("CREATE TABLE IF NOT EXISTS t (x int)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (0)")
    return holder


async def test_a_writer_waits_for_a_lock_held_elsewhere_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    holder = _locked(path)
    engine = create_engine(f"sqlite:///{path}")
    ticks = 0
    waiting = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            if ticks == 5:
                waiting.set()
            await asyncio.sleep(0.001)

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (1)"))

    ticking = asyncio.create_task(ticker())
    writing = asyncio.create_task(write())
    try:
        await asyncio.wait_for(waiting.wait(), 30)  # the loop turns while the writer waits
        assert not writing.done()
        # Release from another thread, so nothing here depends on the loop's timing.
        threading.Thread(target=holder.execute, args=("COMMIT",)).start()
        await asyncio.wait_for(writing, 30)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 2
    finally:
        ticking.cancel()
        writing.cancel()
        await asyncio.gather(ticking, writing, return_exceptions=True)
        await engine.dispose()
        holder.close()


@pytest.mark.parametrize("timeout", [0, 0.05])
async def test_a_lock_held_past_the_busy_timeout_is_unavailable(
    tmp_path: Path, timeout: float
) -> None:
    path = tmp_path / "locked.db"
    holder = _locked(path)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": timeout})
    try:
        with pytest.raises(Exception) as caught:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
        holder.close()
    assert classify(caught.value) is errors.Unavailable, repr(caught.value)
    assert "locked" in str(caught.value)


async def test_readers_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    holder = _locked(path)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(sqlite_begin="DEFERRED")
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 0  # before the holder's
    finally:
        await engine.dispose()
        holder.close()
