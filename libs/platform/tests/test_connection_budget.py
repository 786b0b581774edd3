"""Connection budgets (issue 19 §2) and start-up phases (issue 19 §4).

Pool size and overflow are settings per service; at start the runtime compares
them with what the PostgreSQL server (and the role) allows and warns when they do
not fit; every start logs its phases with their durations.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy.pool import NullPool

from trinity_platform.config import ServiceSettings, load_settings
from trinity_platform.db import create_engine
from trinity_platform.db_budget import check_connection_budget
from trinity_platform.runtime import RuntimeOptions, ServiceRuntime
from trinity_platform.startup import StartupPhases, process_age
from trinity_platform.testing.fixtures import POSTGRES_ENV
from trinity_platform.testing.postgres import ConnectionLimitedDatabase

MIGRATIONS = Path(__file__).parent / "migrations_fixture"
PHASES = [
    "imports",
    "wiring",
    "database connect",
    "migrations",
    "nats connect",
    "stream checks",
    "relay, consumers and background tasks",
    "server bind",
    "ready",
]


def test_pool_settings_per_service() -> None:
    env = {"TRINITY_WORK_DB_POOL_SIZE": "3", "TRINITY_WORK_DB_MAX_OVERFLOW": "0"}
    work = load_settings("work", env=env)
    assert (work.db_pool_size, work.db_max_overflow, work.db_pgbouncer) == (3, 0, False)
    execution = load_settings("execution", env=env)  # another service keeps the defaults
    assert (execution.db_pool_size, execution.db_max_overflow) == (5, 5)
    assert load_settings("work", env={"TRINITY_WORK_DB_PGBOUNCER": "true"}).db_pgbouncer
    for name, value in [
        ("TRINITY_WORK_DB_POOL_SIZE", "0"),
        ("TRINITY_WORK_DB_POOL_SIZE", "many"),
        ("TRINITY_WORK_DB_MAX_OVERFLOW", "-1"),
        ("TRINITY_WORK_DB_PGBOUNCER", "perhaps"),
    ]:
        with pytest.raises(ValueError, match=name):
            load_settings("work", env={name: value})


def test_the_engine_takes_the_pool_settings() -> None:
    url = "postgresql://nobody@127.0.0.1:1/none"  # never connected to
    engine = create_engine(url, pool_size=3, max_overflow=2)
    assert (engine.pool.size(), engine.pool._max_overflow) == (3, 2)  # type: ignore[attr-defined]
    behind_pgbouncer = create_engine(url, pgbouncer=True)
    assert isinstance(behind_pgbouncer.pool, NullPool)  # PgBouncer is the pool


@pytest.fixture
def limited_database() -> Iterator[ConnectionLimitedDatabase]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL tests skipped")
    database = ConnectionLimitedDatabase(admin_url, limit=3)
    database.create()
    try:
        yield database
    finally:
        database.drop()


@pytest.mark.postgres
async def test_the_budget_names_the_limit_a_pool_cannot_fit(
    limited_database: ConnectionLimitedDatabase, postgres_url: str
) -> None:
    engine = create_engine(limited_database.url)
    try:
        budget = await check_connection_budget(engine, wanted=10)
        assert budget is not None
        assert budget.role_limit == 3
        assert any("CONNECTION LIMIT" in w for w in budget.warnings), budget
        small = await check_connection_budget(engine, wanted=2)
        assert small is not None
        assert not any("CONNECTION LIMIT" in w for w in small.warnings), small
        too_big = await check_connection_budget(engine, wanted=100_000)
        assert too_big is not None
        assert any("the server allows" in w for w in too_big.warnings), too_big
    finally:
        await engine.dispose()
    unlimited = create_engine(postgres_url)
    try:
        fits = await check_connection_budget(unlimited, wanted=2)
    finally:
        await unlimited.dispose()
    assert fits is not None and fits.role_limit is None
    assert not any("CONNECTION LIMIT" in w or "allows" in w for w in fits.warnings)


async def test_sqlite_has_no_connection_budget(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        assert await check_connection_budget(engine, wanted=10) is None
    finally:
        await engine.dispose()


def runtime(tmp_path: Path, nats_url: str, database_url: str) -> ServiceRuntime:
    settings = ServiceSettings(
        service="definition",
        nats_url=nats_url,
        data_dir=tmp_path,
        database_url=database_url,
        listen="127.0.0.1:0",
        db_pool_size=5,
        db_max_overflow=5,
    )
    options = RuntimeOptions(stop_grace=1.0, configure_logging=False)
    return ServiceRuntime(settings, migrations=MIGRATIONS, options=options)


@pytest.mark.postgres
async def test_a_service_warns_at_start_when_its_pool_exceeds_the_limit(
    tmp_path: Path, nats_url: str, limited_database: ConnectionLimitedDatabase
) -> None:
    rt = runtime(tmp_path, nats_url, limited_database.url)
    with structlog.testing.capture_logs() as logs:
        await rt.start()
        await rt.stop()
    warnings = [e for e in logs if e["event"].startswith("database connection budget exceeded")]
    assert warnings and "limited to 3" in warnings[0]["event"], logs
    assert warnings[0]["log_level"] == "warning"
    phases = [e["phase"] for e in logs if e["event"] == "start phase"]
    assert phases == [*PHASES[:3], "connection budget check", *PHASES[3:]]


async def test_every_start_phase_is_logged_with_its_duration(
    tmp_path: Path, nats_url: str, sqlite_url: str
) -> None:
    rt = runtime(tmp_path, nats_url, sqlite_url)
    with structlog.testing.capture_logs() as logs:
        await rt.start()
        await rt.stop()
    phases = [e for e in logs if e["event"] == "start phase"]
    assert [e["phase"] for e in phases] == PHASES
    assert all(e["seconds"] >= 0 and e["component"] == "definition" for e in phases)
    elapsed = [e["since_process_start"] for e in phases]
    assert elapsed == sorted(elapsed)
    (started,) = [e for e in logs if e["event"] == "started"]
    assert set(started["phases"]) == set(PHASES)
    assert started["slowest_phase"] in PHASES
    assert started["seconds"] >= elapsed[-1]


def test_process_age_counts_from_the_process_start() -> None:
    age = process_age()
    assert age is not None and age > 0  # this test process started before this line
    phases = StartupPhases("probe")
    assert phases.mark("imports", defer=True) >= 0
