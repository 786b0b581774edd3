"""A real definition service per test: gRPC over loopback, real NATS, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trinity_definition.testing import RunningService, running_service
from trinity_platform.testing.nats_server import NatsServer


@pytest.fixture
async def service(
    database_url: str, nats_server_session: NatsServer, tmp_path: Path
) -> AsyncIterator[RunningService]:
    async with running_service(database_url, nats_server_session.url, tmp_path) as running:
        yield running
