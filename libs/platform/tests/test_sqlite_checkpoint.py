"""The WAL is checkpointed by the engine's own thread, not inside a commit on the loop."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import time
from pathlib import Path

from sqlalchemy import text

from trinity_platform.db import SqliteEngine, create_engine
from trinity_platform.sqlite_checkpoint import THRESHOLD_PAGES, WalCheckpointer


async def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_commits_leave_the_checkpoint_to_the_engines_thread(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    engine = create_engine(f"sqlite:///{path}")
    assert isinstance(engine, SqliteEngine) and engine.checkpointer is not None
    async with engine.begin() as conn:
        automatic = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
        assert automatic == 0
        await conn.execute(text("CREATE TABLE t (b BLOB)"))
    # More than the threshold of pages, in several commits.
    for _ in range(12):
        async with engine.begin() as conn:
            for _ in range(THRESHOLD_PAGES // 10):
                await conn.execute(text("INSERT INTO t VALUES (randomblob(4000))"))
    checkpointer = engine.checkpointer
    await _until(lambda: checkpointer.checkpoints >= 1, "the thread never checkpointed")
    # Everything in the WAL is in the database file now: nothing left to copy.
    other = sqlite3.connect(path, isolation_level=None)
    try:
        busy, frames, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == copied
    finally:
        other.close()
    await engine.dispose()
    assert not checkpointer._thread.is_alive()


async def test_an_in_memory_database_keeps_sqlites_own_checkpoint() -> None:
    engine = create_engine("sqlite:///:memory:")
    assert isinstance(engine, SqliteEngine) and engine.checkpointer is None
    await engine.dispose()


def test_the_thread_ends_with_its_owner(tmp_path: Path) -> None:
    class Owner:
        pass

    owner = Owner()
    path = tmp_path / "owned.db"
    sqlite3.connect(path).close()
    checkpointer = WalCheckpointer(str(path), owner, interval_s=0.01)
    checkpointer.start()
    del owner
    gc.collect()
    checkpointer._thread.join(timeout=30)
    assert not checkpointer._thread.is_alive()
