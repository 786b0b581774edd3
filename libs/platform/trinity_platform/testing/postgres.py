"""A throw-away PostgreSQL database per test."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
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
