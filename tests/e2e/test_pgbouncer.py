"""PgBouncer in transaction pooling mode in front of the services (issue 19 §2).

PgBouncer is installed when missing and possible (apt-get as root); otherwise the
tests skip and say why. It runs as deploy/README.md recommends: transaction mode,
``DISCARD ALL`` after every transaction, so a server connection carries nothing
from one transaction to the next.

The two traps: prepared statements (asyncpg caches them per client connection, but
the next transaction runs on another server connection: "prepared statement … does
not exist") and session-level advisory locks (the relay and the migrations use
transaction-level ones, which end with their transaction).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text

from trinity.process.execution.v1 import execution_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.db import create_engine
from trinity_platform.testing.pgbouncer import PgBouncer, install_pgbouncer
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.postgres import TemporaryPostgresDatabase

from .conftest import POSTGRES_ENV
from .test_resilience import (
    assert_each_step_ran_once,
    executor_config,
    publish,
    statuses,
    trigger_many,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

EXECUTIONS = 6


@pytest.fixture
def pgbouncer() -> Iterator[PgBouncer]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL tests skipped")
    binary = install_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed and could not be (apt-get install pgbouncer)")
    bouncer = PgBouncer(binary, admin_url, pool_size=3)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def databases() -> Iterator[dict[str, str]]:
    """A fresh database per service; their names (reached through PgBouncer)."""
    admin_url = os.environ[POSTGRES_ENV]
    created = {s: TemporaryPostgresDatabase(admin_url, prefix=f"pgb_{s}") for s in SERVICES}
    for database in created.values():
        database.create()
    try:
        yield {service: database.name for service, database in created.items()}
    finally:
        for database in created.values():
            database.drop()


async def run_statements(url: str, pgbouncer: bool) -> None:
    """The same statements in several transactions of several connections at once."""
    engine = create_engine(url, pgbouncer=pgbouncer)
    try:

        async def client(n: int) -> None:
            async with engine.connect() as conn:
                for i in range(5):
                    assert (
                        await conn.scalar(
                            text("SELECT CAST(:n AS int) + CAST(:i AS int)"), {"n": n, "i": i}
                        )
                        == n + i
                    )
                    await conn.commit()

        await asyncio.gather(*(client(n) for n in range(6)))
    finally:
        await engine.dispose()


async def test_prepared_statements_need_the_pgbouncer_setting(
    pgbouncer: PgBouncer, databases: dict[str, str]
) -> None:
    url = pgbouncer.url(databases["definition"])
    with pytest.raises(Exception, match="prepared statement"):
        await run_statements(url, pgbouncer=False)  # the trap, shown
    await run_statements(url, pgbouncer=True)


async def test_the_suite_runs_through_pgbouncer_in_transaction_mode(
    pgbouncer: PgBouncer, databases: dict[str, str], tmp_path: Path, nats_url: str, stream_reader
) -> None:  # type: ignore[no-untyped-def]
    suite = LocalSuite(
        data_dir=tmp_path / "data",
        nats_url=nats_url,
        ports={service: free_port() for service in SERVICES},
        database_urls={s: pgbouncer.url(name) for s, name in databases.items()},
        executor_config=executor_config(tmp_path, "20ms"),
        extra_env={f"TRINITY_{s.upper()}_DB_PGBOUNCER": "true" for s in SERVICES},
    )
    try:
        suite.start()
        await asyncio.to_thread(suite.wait_healthy, 120)
        # A second execution replica: its relay's transaction-level advisory lock and its
        # SKIP LOCKED claims go through PgBouncer too.
        replica = suite.start_replica("execution", 1, free_port())
        await publish(suite.ports["definition"])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}") as channel:
            stub = ExecutionServiceStub(channel)
            ids = await trigger_many([stub], EXECUTIONS)
            deadline = time.monotonic() + 180
            while (await statuses(stub, ids))[
                execution_pb2.EXECUTION_STATUS_COMPLETED
            ] < EXECUTIONS:
                assert time.monotonic() < deadline, (
                    f"{await statuses(stub, ids)}\n{suite.log_tail('execution')}\n"
                    f"{suite.log_tail(replica)}\n{pgbouncer.log_tail()}"
                )
                await asyncio.sleep(0.2)
        await assert_each_step_ran_once(stream_reader, ids)
        for name in (*SERVICES, replica):
            log = (suite.data_dir / "logs" / f"{name}.log").read_text()
            assert "prepared statement" not in log, suite.log_tail(name)
            assert "unhandled exception" not in log, suite.log_tail(name)
    finally:
        suite.stop()
