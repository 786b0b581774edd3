"""SQLite statements run on the event loop's own thread, not in a worker thread.

aiosqlite hands every statement to its worker thread and the answer back (a queue, a
future, a wake-up of the loop): that hand-off costs far more than the statement itself
(a commit of two rows: ~1 ms through aiosqlite, ~40 us through the stdlib driver). So
SQLAlchemy's aiosqlite dialect gets a DBAPI whose "async" calls run the stdlib driver
at once; SQLAlchemy's greenlet adaption stays, the threads go.

A statement must then never wait inside SQLite, or it would stall the loop (and the
transaction holding the lock would never finish): connections run with
``busy_timeout = 0`` and a statement refused with SQLITE_BUSY is retried here, sleeping
on the loop between attempts, until the platform's busy timeout. In WAL mode only
``BEGIN IMMEDIATE`` meets a lock in practice (another process writing; in one process
the engine's gate makes writers take turns), and it is safe to repeat.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_dbapi,
)

T = TypeVar("T")

_SQLITE_BUSY = 5
_SQLITE_BUSY_SNAPSHOT = 517  # a stale read snapshot: waiting does not help
_FIRST_PAUSE_S = 0.001
_LONGEST_PAUSE_S = 0.05


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is None:  # an older driver: only the message tells
        return "database is locked" in str(error)
    return code & 0xFF == _SQLITE_BUSY and code != _SQLITE_BUSY_SNAPSHOT


async def _when_free(call: Callable[..., T], args: tuple[Any, ...], timeout_s: float) -> T:
    """``call(*args)`` once SQLite no longer answers BUSY (at most ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    pause = _FIRST_PAUSE_S
    while True:
        await asyncio.sleep(pause)
        try:
            return call(*args)
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() + pause > deadline:
                raise
        pause = min(pause * 2, _LONGEST_PAUSE_S)


class _Cursor:
    """An aiosqlite-shaped cursor over a stdlib cursor."""

    __slots__ = ("_busy_timeout_s", "_cursor")

    def __init__(self, cursor: sqlite3.Cursor, busy_timeout_s: float) -> None:
        self._cursor = cursor
        self._busy_timeout_s = busy_timeout_s

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> _Cursor:
        try:
            self._cursor.execute(sql, parameters)
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            await _when_free(self._cursor.execute, (sql, parameters), self._busy_timeout_s)
        return self

    async def executemany(self, sql: str, parameters: Any) -> _Cursor:
        parameters = list(parameters)  # may be retried
        try:
            self._cursor.executemany(sql, parameters)
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            await _when_free(self._cursor.executemany, (sql, parameters), self._busy_timeout_s)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """An aiosqlite-shaped connection whose calls run the stdlib driver at once."""

    def __init__(self, connection: sqlite3.Connection, busy_timeout_s: float) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._busy_timeout_s = busy_timeout_s

    @property
    def _connection(self) -> sqlite3.Connection | None:  # SQLAlchemy's "still open?" check
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn

    def cursor(self) -> _Cursor:
        return _Cursor(self._open().cursor(), self._busy_timeout_s)

    async def execute(self, sql: str, parameters: Any = ()) -> _Cursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        connection = self._open()
        try:
            connection.commit()
        except sqlite3.OperationalError as error:
            if not _is_busy(error):
                raise
            await _when_free(connection.commit, (), self._busy_timeout_s)

    async def rollback(self) -> None:
        self._open().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._open().create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        connection, self._conn = self._conn, None
        if connection is not None:
            connection.close()


class _AdaptedConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    @property
    def isolation_level(self) -> str | None:
        return self._connection._open().isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection._open().isolation_level = value


class InlineSqliteDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI for ``create_async_engine(..., module=InlineSqliteDbapi(...))``."""

    def __init__(self, busy_timeout_s: float) -> None:
        super().__init__(aiosqlite, sqlite3)
        self._busy_timeout_s = busy_timeout_s

    def connect(self, *args: Any, **kwargs: Any) -> _AdaptedConnection:
        kwargs.pop("async_creator_fn", None)
        # sqlite3's own ``timeout`` (how long to wait for a lock) is waited here, on the
        # loop; SQLite itself gets 0 (busy_timeout 0: it never blocks the loop).
        busy_timeout_s = float(kwargs.pop("timeout", self._busy_timeout_s))
        kwargs["timeout"] = 0
        # A pooled connection may be closed by the garbage collector from another thread.
        kwargs["check_same_thread"] = False
        connection = sqlite3.connect(*args, **kwargs)
        return _AdaptedConnection(self, cast(Any, InlineConnection(connection, busy_timeout_s)))
