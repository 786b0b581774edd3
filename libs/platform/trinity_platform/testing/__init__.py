"""Test helpers: a private nats-server, free ports, throw-away PostgreSQL databases.

The pytest fixtures live in :mod:`trinity_platform.testing.fixtures`, registered by
the repository's root ``conftest.py``.
"""

from trinity_platform.testing.nats_server import NatsServer, find_nats_server
from trinity_platform.testing.ports import free_port, wait_for_port
from trinity_platform.testing.postgres import PostgresDatabaseFactory, TemporaryPostgresDatabase

__all__ = [
    "NatsServer",
    "PostgresDatabaseFactory",
    "TemporaryPostgresDatabase",
    "find_nats_server",
    "free_port",
    "wait_for_port",
]
