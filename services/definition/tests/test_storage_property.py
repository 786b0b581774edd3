"""Random valid specs survive create → publish → read, and the fact carries them unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from trinity.process.definition.v1 import facts_pb2
from trinity_definition.application.commands import CreateDraft, PublishDefinition
from trinity_definition.application.handlers import create_draft, publish_definition
from trinity_definition.bootstrap import MIGRATIONS, environment
from trinity_definition.codec import spec_message, spec_of
from trinity_definition.infrastructure.transaction import SqlDefinitionTransaction
from trinity_platform.db import OUTBOX, create_engine, run_migrations
from trinity_platform.sql_unit_of_work import SqlUnitOfWork
from trinity_process_model.model import ProcessSpec

strategies = pytest.importorskip("trinity_process_model.testing_strategies")


def test_valid_specs_round_trip_through_storage(tmp_path: Path) -> None:
    env = environment()
    with asyncio.Runner() as runner:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
        runner.run(run_migrations(engine, MIGRATIONS))

        uow = SqlUnitOfWork(engine, SqlDefinitionTransaction)

        async def round_trip(spec: ProcessSpec) -> None:
            draft = await uow.write(lambda tx: create_draft(CreateDraft(spec), tx.definitions, env))
            await uow.write(
                lambda tx: publish_definition(PublishDefinition(draft.id), tx.definitions, env)
            )
            stored = await uow.read(lambda tx: tx.definitions.get(draft.id))
            async with engine.begin() as conn:
                payload = (
                    await conn.execute(
                        select(OUTBOX.c.payload).where(OUTBOX.c.ce_subject == draft.id)
                    )
                ).scalar_one()
            assert stored.spec == spec
            fact = facts_pb2.DefinitionPublished.FromString(payload)
            assert fact.definition.spec == spec_message(spec)
            assert spec_of(fact.definition.spec) == spec

        @settings(
            max_examples=10,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(strategies.process_specs(max_steps=6))
        def check(spec: ProcessSpec) -> None:
            runner.run(round_trip(spec))

        try:
            check()
        finally:
            runner.run(engine.dispose())
