"""pytest fixtures (registered from the repository root ``conftest.py``).

* ``nats_server`` / ``nats_server_session``: a private JetStream server
  (:class:`~trinity_platform.testing.NatsServer`, with ``stop()`` / ``start()``).
* ``nats_url``: the URL of the test's ``nats_server``.
* ``sqlite_url``: a SQLite file in ``tmp_path``.
* ``postgres_url``: a fresh database created from ``TRINITY_TEST_POSTGRES_URL``
  (e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped afterwards;
  skipped, with the reason shown, when the variable is unset.
* ``database_url``: parametrized over ``sqlite`` and ``postgres``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.postgres import PostgresDatabaseFactory

POSTGRES_ENV = "TRINITY_TEST_POSTGRES_URL"


@pytest.fixture
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats") / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def nats_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats-session") / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[PostgresDatabaseFactory | None]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        yield None
        return
    factory = PostgresDatabaseFactory(admin_url)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def postgres_url(_postgres_databases: PostgresDatabaseFactory | None) -> Iterator[str]:
    if _postgres_databases is None:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL tests skipped")
    database = _postgres_databases.take()
    try:
        yield database.url
    finally:
        _postgres_databases.release(database)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))
