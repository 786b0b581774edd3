"""What the benchmarks run on: a private nats-server, throw-away databases, subprocesses.

Everything listens on 127.0.0.1 and is started and removed by the harness itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from trinity_platform.db import PLATFORM_METADATA, create_engine
from trinity_platform.testing import NatsServer, TemporaryPostgresDatabase, free_port, wait_for_port

from .core import Skip

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_ENV = "TRINITY_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# The aggregate row every benchmark transaction writes next to its outbox row.
BENCH_METADATA = MetaData()
BENCH_ITEMS = Table(
    "bench_items",
    BENCH_METADATA,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL


async def postgres_unreachable(admin_url: str) -> str | None:
    """None when PostgreSQL answers at ``admin_url``, else why not."""
    import asyncpg
    from sqlalchemy.engine import make_url

    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = await asyncio.wait_for(asyncpg.connect(plain, timeout=3), 5)
    except Exception as exc:
        return f"PostgreSQL not reachable at {admin_url} ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


@asynccontextmanager
async def private_nats(workdir: Path) -> AsyncIterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port and a temporary store."""
    server = NatsServer(workdir / f"nats-{os.getpid()}-{free_port()}" / "store")
    await server.start_async()
    try:
        yield server
    finally:
        await server.stop_async()


async def connect_nats(url: str) -> NATS:
    async def quiet(_exc: Exception) -> None:
        pass

    return await nats.connect(url, connect_timeout=2, max_reconnect_attempts=3, error_cb=quiet)


@asynccontextmanager
async def temporary_postgres(admin_url: str, prefix: str = "trinity_bench") -> AsyncIterator[str]:
    """A fresh PostgreSQL database (dropped afterwards); :class:`Skip` when unreachable."""
    reason = await postgres_unreachable(admin_url)
    if reason:
        raise Skip(reason)
    database = TemporaryPostgresDatabase(admin_url, prefix=prefix)
    url = await asyncio.to_thread(database.create)
    try:
        yield url
    finally:
        await asyncio.to_thread(database.drop)


@asynccontextmanager
async def bench_engine(kind: str, workdir: Path, admin_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a fresh SQLite file or PostgreSQL database, tuned like the services'
    (:func:`trinity_platform.db.create_engine`), with the platform tables and ``bench_items``.
    """
    if kind == "sqlite":
        path = workdir / f"bench-{free_port()}.db"
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await _create_tables(engine)
            yield engine
        finally:
            await engine.dispose()
        return
    async with temporary_postgres(admin_url) as url:
        engine = create_engine(url)
        try:
            await _create_tables(engine)
            yield engine
        finally:
            await engine.dispose()


async def _create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
        await conn.run_sync(BENCH_METADATA.create_all)


class Subprocess:
    """A helper process of the harness (``python -m tests.bench.<module>``) on a free port."""

    def __init__(self, module: str, *args: str) -> None:
        self.port = free_port()
        self._argv = [sys.executable, "-m", module, "--port", str(self.port), *args]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Subprocess:
        await asyncio.to_thread(self._start)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.to_thread(self._stop)

    def _start(self) -> None:
        self._process = subprocess.Popen(self._argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
        try:
            wait_for_port("127.0.0.1", self.port, 15.0)
        except BaseException:
            self._stop()
            raise

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
