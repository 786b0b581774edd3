import asyncio
from pathlib import Path

from sqlalchemy import inspect, text

from trinity_platform.db import create_engine, run_migrations

MIGRATIONS = Path(__file__).parent / "migrations_fixture"


def _tables(sync_conn) -> set[str]:
    return set(inspect(sync_conn).get_table_names())


async def test_migrations_create_tables_and_are_idempotent(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await run_migrations(engine, MIGRATIONS)
        await run_migrations(engine, MIGRATIONS)  # already at head: nothing to do
        async with engine.connect() as conn:
            tables = await conn.run_sync(_tables)
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("widgets")}
            )
        assert {"outbox", "inbox", "idempotency", "widgets", "alembic_version"} <= tables
        assert version == "0002"
        assert "color" in columns
    finally:
        await engine.dispose()


async def test_replicas_migrating_together_do_not_collide(database_url: str) -> None:
    engines = [create_engine(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(run_migrations(e, MIGRATIONS) for e in engines))
        async with engines[0].connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        for e in engines:
            await e.dispose()


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/sub/dir/x.db")  # plain URL, missing folder
    try:
        async with engine.connect() as conn:
            assert (await conn.scalar(text("PRAGMA journal_mode"))) == "wal"
            assert (await conn.scalar(text("PRAGMA synchronous"))) == 1  # NORMAL
            assert (await conn.scalar(text("PRAGMA foreign_keys"))) == 1
            # 0: the platform waits for a lock on the event loop (sqlite_inline), not SQLite.
            assert (await conn.scalar(text("PRAGMA busy_timeout"))) == 0
        assert (tmp_path / "sub" / "dir" / "x.db").exists()
    finally:
        await engine.dispose()
