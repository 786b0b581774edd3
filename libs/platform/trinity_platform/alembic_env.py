"""The body of every service's ``migrations/env.py``::

    from trinity_platform.alembic_env import run
    from trinity_definition.infrastructure.tables import metadata

    run(metadata)

When :func:`trinity_platform.db.run_migrations` calls Alembic, the migrations run on
its connection (and inside its transaction). From the ``alembic`` command line the
URL comes from ``-x url=...`` or ``sqlalchemy.url``; ``postgresql://`` and
``sqlite://`` URLs get their asyncio driver.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from trinity_platform.config import normalize_database_url
from trinity_platform.db import (
    add_outbox_traceparent,
    create_platform_tables,
    drop_platform_tables,
)

__all__ = ["add_outbox_traceparent", "create_platform_tables", "drop_platform_tables", "run"]


def run(target_metadata: MetaData | None = None, **configure_kwargs: Any) -> None:
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on_connection(connection, target_metadata, configure_kwargs)
        return

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL: pass -x url=... or set sqlalchemy.url")
    url = normalize_database_url(url)
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=target_metadata,
            literal_binds=True,
            **configure_kwargs,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, target_metadata, configure_kwargs))


def _run_on_connection(
    connection: Connection, target_metadata: MetaData | None, configure_kwargs: dict[str, Any]
) -> None:
    from alembic import context

    options: dict[str, Any] = {"render_as_batch": connection.dialect.name == "sqlite"}
    options.update(configure_kwargs)
    context.configure(connection=connection, target_metadata=target_metadata, **options)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(
    url: str, target_metadata: MetaData | None, configure_kwargs: dict[str, Any]
) -> None:
    from trinity_platform.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_on_connection, target_metadata, configure_kwargs)
    finally:
        await engine.dispose()
