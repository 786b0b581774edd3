"""Database engine, the tables every service has, and Alembic migrations at start.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL``, its
statements on the event loop's thread (:mod:`trinity_platform.sqlite_inline`): a
commit is durable against a killed *process* (the WAL lives in the file system
cache, which survives the process), only a power loss or OS crash can drop the
last commits. The WAL is checkpointed by a thread of the engine's own
(:mod:`trinity_platform.sqlite_checkpoint`), not inside a commit. Every transaction opens with ``BEGIN IMMEDIATE`` so writers queue
on ``busy_timeout`` instead of failing with "database is locked" when a read
transaction tries to become a write transaction; a read-only block may opt out
with ``conn.execution_options(sqlite_begin="DEFERRED")``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    event,
    text,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from trinity_platform.config import (
    DEFAULT_DB_MAX_OVERFLOW,
    DEFAULT_DB_POOL_SIZE,
    normalize_database_url,
)
from trinity_platform.db_errors import DatabaseBusy
from trinity_platform.logs import get_logger
from trinity_platform.sqlite_checkpoint import WalCheckpointer
from trinity_platform.sqlite_inline import InlineSqliteDbapi

_log = get_logger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Key of the advisory lock that serializes concurrent migrations of replicas (PostgreSQL).
MIGRATION_LOCK_KEY = 0x7472696E_6D6967  # "trinmig"


def is_sqlite(engine: AsyncEngine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgres(engine: AsyncEngine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def create_engine(
    url: str,
    *,
    pool_size: int = DEFAULT_DB_POOL_SIZE,
    max_overflow: int = DEFAULT_DB_MAX_OVERFLOW,
    pgbouncer: bool = False,
    **kwargs: Any,
) -> AsyncEngine:
    """An :class:`AsyncEngine` tuned for the dialect (see the module docstring).

    On PostgreSQL the process holds at most ``pool_size + max_overflow`` connections.
    With ``pgbouncer`` (PgBouncer in transaction mode in front), PgBouncer is the
    pool: each checkout opens a client connection to it (``NullPool``), and
    prepared statements are neither cached nor given names another client on the
    same server connection could hold already.
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        on_file = bool(database) and database != ":memory:" and not database.startswith("file:")
        if on_file:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("module", InlineSqliteDbapi(SQLITE_BUSY_TIMEOUT_MS / 1000))
        engine = SqliteEngine(create_async_engine(url, **kwargs).sync_engine)
        if on_file:
            engine.checkpointer = WalCheckpointer(str(Path(database).expanduser()), engine)
            engine.checkpointer.start()
        _tune_sqlite(engine, automatic_checkpoint=not on_file)
        return engine
    if parsed.get_backend_name() == "postgresql":
        options: dict[str, Any]
        if pgbouncer:
            options = {
                "poolclass": NullPool,
                "connect_args": {
                    "statement_cache_size": 0,
                    "prepared_statement_cache_size": 0,
                    "prepared_statement_name_func": _unique_statement_name,
                },
            }
        else:
            options = {
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "pool_pre_ping": True,
                "pool_recycle": 1800,
            }
        options.update(kwargs)
        return create_async_engine(url, **options)
    return create_async_engine(url, **kwargs)


def _unique_statement_name() -> str:
    return f"__trinity_{uuid.uuid4().hex}__"


class _GatedConnection(AsyncConnection):
    """A connection that holds its engine's gate from start to close."""

    __slots__ = ("_holds_gate",)

    def __init__(self, async_engine: AsyncEngine, sync_connection: Any = None) -> None:
        super().__init__(async_engine, sync_connection)
        self._holds_gate = False

    async def start(self, is_ctxmanager: bool = False) -> AsyncConnection:
        gate = cast(SqliteEngine, self.engine).gate
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that races with the grant, leaving a cancelled task running (stop() hangs).
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await gate.acquire()
        except TimeoutError:
            raise DatabaseBusy(
                "the database stayed busy (another transaction ran too long)"
            ) from None
        self._holds_gate = True
        try:
            return await super().start(is_ctxmanager)
        except BaseException:
            self._release()
            raise

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._holds_gate:
            self._holds_gate = False
            cast(SqliteEngine, self.engine).gate.release()


class SqliteEngine(AsyncEngine):
    """SQLite allows one writer, and every transaction here begins IMMEDIATE (a writer).

    Left to SQLite, concurrent coroutines would wait in its busy handler, which
    polls with sleeps of up to 100 ms: idle CPU, long queues. So the process's
    connections take turns on an asyncio lock instead and each starts the moment
    the previous one closes. Readers that opt out with :func:`read_only` (DEFERRED,
    which in WAL mode never waits for a writer) bypass the gate.
    """

    __slots__ = ("checkpointer", "gate")
    _connection_cls = _GatedConnection

    def __init__(self, sync_engine: Any) -> None:
        super().__init__(sync_engine)
        self.gate = asyncio.Lock()
        self.checkpointer: WalCheckpointer | None = None

    async def dispose(self, close: bool = True) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        await super().dispose(close)


def _tune_sqlite(engine: AsyncEngine, *, automatic_checkpoint: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below); the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # 0: statements run on the event loop, which must never block on a lock;
            # sqlite_inline waits for it between retries instead (SQLITE_BUSY_TIMEOUT_MS).
            cursor.execute("PRAGMA busy_timeout = 0")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not automatic_checkpoint:
                # The engine's WalCheckpointer thread does it, off the event loop.
                cursor.execute("PRAGMA wal_autocheckpoint = 0")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
        if mode not in {"IMMEDIATE", "DEFERRED", "EXCLUSIVE"}:
            raise ValueError(f"sqlite_begin must be IMMEDIATE, DEFERRED or EXCLUSIVE, not {mode}")
        # Straight to the driver: the statement needs none of SQLAlchemy's execution
        # machinery (context, events, result), which costs more than the BEGIN itself.
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(f"BEGIN {mode}")
        finally:
            cursor.close()


@asynccontextmanager
async def read_only(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for reads: on SQLite its transaction is DEFERRED, so it never
    takes the write lock and never waits for (or holds up) a writer in WAL mode.

    Use it for every query that writes nothing; writers use ``engine.begin()``.
    """
    if not is_sqlite(engine):
        async with engine.connect() as conn:
            yield conn
        return
    async with AsyncConnection(engine) as conn:  # a plain connection: not through the gate
        conn = await conn.execution_options(sqlite_begin="DEFERRED")
        yield conn


# --------------------------------------------------------------------------- tables

_ID = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY = rowid on SQLite


def _outbox(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", _ID, primary_key=True, autoincrement=True),
        Column("message_id", String(64), nullable=False, unique=True),
        Column("subject", String(255), nullable=False),
        Column("ce_type", String(255), nullable=False),
        Column("ce_subject", String(255), nullable=False),
        Column("correlation_id", String(255), nullable=False, server_default=""),
        Column("causation_id", String(255), nullable=False, server_default=""),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True),
        # W3C traceparent of the span that wrote the row (NULL with tracing off).
        Column("traceparent", String(64), nullable=True),
        Index(
            "ix_outbox_unpublished",
            "id",
            postgresql_where=text("published_at IS NULL"),
            sqlite_where=text("published_at IS NULL"),
        ),
        Index("ix_outbox_published_at", "published_at"),
    )


def _inbox(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(255), nullable=False),
        Column("message_id", String(255), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, index=True),
        PrimaryKeyConstraint("consumer", "message_id", name="pk_inbox"),
    )


def _idempotency(metadata: MetaData) -> Table:
    return Table(
        "idempotency",
        metadata,
        Column("scope", String(255), nullable=False),
        Column("key", String(255), nullable=False),
        Column("request_fingerprint", String(64), nullable=False),
        Column("response", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, index=True),
        PrimaryKeyConstraint("scope", "key", name="pk_idempotency"),
    )


class PlatformTables(NamedTuple):
    outbox: Table
    inbox: Table
    idempotency: Table


def platform_tables(metadata: MetaData) -> PlatformTables:
    """Add ``outbox``, ``inbox`` and ``idempotency`` to a service's ``metadata``."""
    existing = metadata.tables
    return PlatformTables(
        outbox=existing["outbox"] if "outbox" in existing else _outbox(metadata),
        inbox=existing["inbox"] if "inbox" in existing else _inbox(metadata),
        idempotency=(
            existing["idempotency"] if "idempotency" in existing else _idempotency(metadata)
        ),
    )


# The tables the platform modules (outbox, relay, inbox, idempotency) query.
PLATFORM_METADATA = MetaData()
OUTBOX, INBOX, IDEMPOTENCY = platform_tables(PLATFORM_METADATA)


def create_platform_tables(op: Any) -> None:
    """Create the three platform tables from a service's first Alembic migration::

    def upgrade() -> None:
        create_platform_tables(op)
        op.create_table("definitions", ...)
    """
    PLATFORM_METADATA.create_all(op.get_bind(), checkfirst=False)


def add_outbox_traceparent(op: Any) -> None:
    """A migration step: the outbox's ``traceparent`` column, where it is missing
    (databases created after it came have it from :func:`create_platform_tables`)."""
    from sqlalchemy import inspect

    if "traceparent" not in {c["name"] for c in inspect(op.get_bind()).get_columns("outbox")}:
        op.add_column("outbox", Column("traceparent", String(64), nullable=True))


def drop_platform_tables(op: Any) -> None:
    """The ``downgrade`` counterpart of :func:`create_platform_tables`."""
    PLATFORM_METADATA.drop_all(op.get_bind(), checkfirst=False)


# --------------------------------------------------------------------------- migrations


async def run_migrations(engine: AsyncEngine, script_location: str | Path) -> None:
    """Alembic ``upgrade head`` on ``engine`` (in one transaction where the dialect allows).

    On PostgreSQL a transaction-scoped advisory lock makes replicas that start
    together migrate one after the other.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))

    def upgrade(sync_conn: Connection) -> None:
        if is_postgres(sync_conn):
            key = {"k": MIGRATION_LOCK_KEY}
            if not sync_conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), key).scalar():
                # Say why this start is silent for a while (a slow start's usual suspect).
                _log.info("another replica is migrating this database; waiting for it")
                sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), key)
        config.attributes["connection"] = sync_conn
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        await conn.run_sync(upgrade)


async def wait_for_database(engine: AsyncEngine, *, max_wait: float | None = None) -> None:
    """Retry ``SELECT 1`` with capped backoff until the database answers."""
    loop = asyncio.get_running_loop()
    deadline = None if max_wait is None else loop.time() + max_wait
    delay = 0.2
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except Exception as exc:  # driver errors differ per dialect
            if deadline is not None and loop.time() + delay > deadline:
                raise
            _log.warning("database not reachable, retrying", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
