"""A throw-away PostgreSQL database per test."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import deque
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sqlalchemy.engine import make_url


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on a fresh event loop in a thread (a loop may run in this one)."""
    error: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]


def _plain(url: str) -> str:
    """asyncpg wants ``postgresql://`` without a driver suffix."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


class TemporaryPostgresDatabase:
    """``create()`` a fresh database next to ``admin_url``; ``drop()`` it afterwards."""

    def __init__(self, admin_url: str, prefix: str = "trinity_test") -> None:
        self.admin_url = _plain(admin_url)
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.url = (
            make_url(self.admin_url).set(database=self.name).render_as_string(hide_password=False)
        )

    async def _execute(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self) -> str:
        _run(self._execute(f'CREATE DATABASE "{self.name}"'))
        return self.url

    def drop(self) -> None:
        _run(self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


class PostgresDatabaseFactory:
    """Hands out fresh databases, creating the next one while the current test runs
    and dropping used ones in the background (CREATE DATABASE costs ~0.3 s)."""

    def __init__(self, admin_url: str, ahead: int = 1) -> None:
        self.admin_url = admin_url
        self._ahead = max(ahead, 1)
        self._executor = ThreadPoolExecutor(max_workers=3, thread_name_prefix="pg-test-db")
        self._ready: deque[Future[TemporaryPostgresDatabase]] = deque()
        self._drops: list[Future[None]] = []

    def _create(self) -> TemporaryPostgresDatabase:
        database = TemporaryPostgresDatabase(self.admin_url)
        database.create()
        return database

    def take(self) -> TemporaryPostgresDatabase:
        while len(self._ready) < self._ahead + 1:
            self._ready.append(self._executor.submit(self._create))
        return self._ready.popleft().result()

    def release(self, database: TemporaryPostgresDatabase) -> None:
        self._drops.append(self._executor.submit(database.drop))

    def close(self) -> None:
        """Drop every database handed out or prepared (in parallel) and wait for it."""
        errors: list[BaseException] = []
        for future in self._ready:
            try:
                self.release(future.result())
            except BaseException as exc:
                errors.append(exc)
        self._ready.clear()
        for drop in self._drops:
            try:
                drop.result()
            except BaseException as exc:
                errors.append(exc)
        self._executor.shutdown()
        if errors:
            raise errors[0]


class ConnectionLimitedDatabase(TemporaryPostgresDatabase):
    """A fresh database owned by a fresh role limited to ``limit`` connections
    (``CREATE ROLE … LOGIN CONNECTION LIMIT n``): the server answers the next
    connection with "too many connections for role", as an exhausted server does."""

    def __init__(self, admin_url: str, limit: int, prefix: str = "trinity_limited") -> None:
        super().__init__(admin_url, prefix)
        self.role = self.name
        self.limit = limit
        self._password = uuid.uuid4().hex  # for servers that do not trust local connections
        self.url = (
            make_url(self.admin_url)
            .set(database=self.name, username=self.role, password=self._password)
            .render_as_string(hide_password=False)
        )

    def create(self) -> str:
        _run(
            self._execute(
                f"CREATE ROLE \"{self.role}\" LOGIN PASSWORD '{self._password}' "
                f"CONNECTION LIMIT {self.limit}"
            )
        )
        _run(self._execute(f'CREATE DATABASE "{self.name}" OWNER "{self.role}"'))
        return self.url

    def drop(self) -> None:
        super().drop()
        _run(self._execute(f'DROP ROLE IF EXISTS "{self.role}"'))
