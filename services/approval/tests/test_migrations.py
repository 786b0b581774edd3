"""The migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from trinity_approval.bootstrap import MIGRATIONS
from trinity_approval.infrastructure.tables import metadata
from trinity_platform.db import create_engine, run_migrations


async def test_the_migrated_schema_matches_the_tables(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await run_migrations(engine, MIGRATIONS)
        await run_migrations(engine, MIGRATIONS)  # a second start changes nothing

        def differences(sync_conn: Any) -> list[Any]:
            context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
            return [
                diff
                for diff in compare_metadata(context, metadata)
                if not (isinstance(diff, tuple) and diff[1] == "alembic_version")
            ]

        async with engine.connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        await engine.dispose()
