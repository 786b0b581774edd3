"""Fixtures of the platform tests: a database with the platform tables, a NATS connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.db import PLATFORM_METADATA, create_engine


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url)
    async with eng.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def connect(url: str) -> NATS:
    async def quiet(_exc: Exception) -> None:
        pass

    return await nats.connect(
        url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        connect_timeout=1,
        error_cb=quiet,
    )
