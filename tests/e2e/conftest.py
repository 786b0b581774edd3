"""The whole suite as real subprocesses: free ports, a private NATS, SQLite or PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.envelope import Envelope
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.postgres import TemporaryPostgresDatabase

pytestmark = pytest.mark.e2e

POSTGRES_ENV = "TRINITY_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def suite_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Per-service database URLs: {} for the SQLite defaults, or a fresh PostgreSQL database each."""
    if request.param == "sqlite":
        yield {}
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL end-to-end tests skipped")
    databases = {s: TemporaryPostgresDatabase(admin_url, prefix=f"e2e_{s}") for s in SERVICES}
    urls = {service: database.create() for service, database in databases.items()}
    try:
        yield urls
    finally:
        for database in databases.values():
            database.drop()


@pytest.fixture
def make_suite(
    tmp_path: Path, nats_url: str, suite_database: dict[str, str]
) -> Iterator[Callable[..., LocalSuite]]:
    suites: list[LocalSuite] = []

    def make(**overrides: object) -> LocalSuite:
        options: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "nats_url": nats_url,
            "ports": {service: free_port() for service in SERVICES},
            "database_urls": suite_database,
        }
        options.update(overrides)
        suite = LocalSuite(**options)  # type: ignore[arg-type]
        suites.append(suite)
        return suite

    yield make
    for suite in suites:
        suite.stop()


@pytest.fixture
async def jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def read_stream(js: JetStreamContext, stream: str) -> list[Envelope]:
    """Every message of a stream, in stream order, as envelopes."""
    info = await js.stream_info(stream)
    envelopes = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, sequence)
        envelopes.append(
            Envelope.from_headers(dict(raw.headers or {}), raw.data or b"", raw.subject)
        )
    return envelopes


@pytest.fixture
def stream_reader(jetstream: JetStreamContext) -> Callable[[str], object]:
    async def read(stream: str) -> list[Envelope]:
        return await read_stream(jetstream, stream)

    return read
