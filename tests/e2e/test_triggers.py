"""Schedule and event triggers of published definitions, through the real suite."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest

from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub

pytestmark = pytest.mark.e2e


def echo_step(message: str) -> definition_pb2.Step:
    return definition_pb2.Step(
        id="work", agent_task=definition_pb2.AgentTask(agent="echo", message=message)
    )


async def publish(stub: DefinitionServiceStub, spec: definition_pb2.ProcessSpec) -> None:
    draft = await stub.CreateDraft(
        definition_service_pb2.CreateDraftRequest(request_id=f"d-{spec.name}", spec=spec)
    )
    await stub.PublishDefinition(
        definition_service_pb2.PublishDefinitionRequest(
            request_id=f"p-{spec.name}", definition_id=draft.definition.id
        )
    )


async def executions_of(stub: ExecutionServiceStub, name: str) -> list[execution_pb2.Execution]:
    reply = await stub.ListExecutions(
        execution_service_pb2.ListExecutionsRequest(process_name=name)
    )
    return list(reply.executions)


@pytest.mark.parametrize("suite_database", ["sqlite"], indirect=True)
async def test_event_and_schedule_triggers_start_each_execution_once(make_suite, nats_url) -> None:  # type: ignore[no-untyped-def]
    suite = make_suite()
    suite.start()
    await asyncio.to_thread(suite.wait_healthy, 90)
    nc = await nats.connect(nats_url)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['definition']}") as definition_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}") as execution_channel,
    ):
        definitions = DefinitionServiceStub(definition_channel)
        executions = ExecutionServiceStub(execution_channel)
        await publish(
            definitions,
            definition_pb2.ProcessSpec(
                name="on-order",
                steps=[echo_step("Order {{ input.order }}")],
                triggers=[
                    definition_pb2.Trigger(
                        event=definition_pb2.EventTrigger(subject="shop.orders.*")
                    )
                ],
            ),
        )
        await publish(
            definitions,
            definition_pb2.ProcessSpec(
                name="nightly",
                steps=[echo_step("report")],
                triggers=[
                    definition_pb2.Trigger(
                        schedule=definition_pb2.ScheduleTrigger(cron="0 3 * * *", timezone="UTC")
                    )
                ],
            ),
        )

        # Event: the same message id, published until the subscription is live, starts one execution.
        deadline = time.monotonic() + 30
        while not await executions_of(executions, "on-order"):
            assert time.monotonic() < deadline, suite.log_tail("execution")
            await nc.publish("shop.orders.created", b'{"order": 1}', headers={"Nats-Msg-Id": "m1"})
            await asyncio.sleep(0.3)
        await nc.publish("shop.orders.created", b'{"order": 1}', headers={"Nats-Msg-Id": "m1"})
        await nc.publish("shop.orders.created", b'{"order": 2}', headers={"Nats-Msg-Id": "m2"})
        await nc.publish("shop.invoices.created", b'{"order": 3}', headers={"Nats-Msg-Id": "m3"})
        deadline = time.monotonic() + 15
        found = await executions_of(executions, "on-order")
        while len(found) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            found = await executions_of(executions, "on-order")
        await asyncio.sleep(1.0)  # a duplicate would arrive by now
        found = await executions_of(executions, "on-order")
        assert sorted(e.input["order"] for e in found) == [1, 2]
        assert {e.trigger_kind for e in found} == {execution_pb2.TRIGGER_KIND_EVENT}

        # Schedule: make the 03:00 fire time due now (time passing), and it starts one execution.
        database = suite.data_dir / "execution.db"
        due = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        deadline = time.monotonic() + 15
        while True:
            with sqlite3.connect(database, timeout=10) as db:
                changed = db.execute(
                    "UPDATE triggers SET next_fire_at = ? WHERE process_name = 'nightly' AND active = 1",
                    (due,),
                ).rowcount
            if changed or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert changed == 1
        deadline = time.monotonic() + 15
        while not await executions_of(executions, "nightly") and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # two scheduler rounds: still one execution
        (nightly,) = await executions_of(executions, "nightly")
        assert nightly.trigger_kind == execution_pb2.TRIGGER_KIND_SCHEDULE
        with sqlite3.connect(database, timeout=10) as db:
            (next_fire,) = db.execute(
                "SELECT next_fire_at FROM triggers WHERE process_name = 'nightly' AND active = 1"
            ).fetchone()
        assert next_fire.split(" ")[1].startswith("03:00:00")
    await nc.close()
