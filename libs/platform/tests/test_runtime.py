"""ServiceRuntime: the whole start/stop sequence with real NATS, SQLite and gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.wrappers_pb2 import StringValue
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.msg import Msg
from sqlalchemy import text

from trinity_platform.authz import Identity
from trinity_platform.config import ServiceSettings
from trinity_platform.consumer import Ack, Outcome
from trinity_platform.envelope import Envelope, decode
from trinity_platform.inbox import claim_message
from trinity_platform.interceptors import current_principal
from trinity_platform.outbox import add_to_outbox
from trinity_platform.runtime import ConsumerSpec, RuntimeOptions, ServiceRuntime
from trinity_platform.subjects import fact_subject, facts_stream
from trinity_platform.testing import NatsServer

MIGRATIONS = Path(__file__).parent / "migrations_fixture"
SERVICE = "trinity.test.Widgets"
FACT = fact_subject("definition", "WidgetCreated")


def settings(tmp_path: Path, nats_url: str) -> ServiceSettings:
    return ServiceSettings(
        service="definition",
        nats_url=nats_url,
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/definition.db",
        listen="127.0.0.1:0",
        auth_tokens={"tok": Identity("alice", frozenset({"author"}))},
    )


def build(tmp_path: Path, nats_url: str) -> tuple[ServiceRuntime, dict[str, list]]:
    """A miniature service composition root."""
    rt = ServiceRuntime(
        settings(tmp_path, nats_url),
        migrations=MIGRATIONS,
        options=RuntimeOptions(
            stop_grace=2.0, relay={"poll_interval": 30.0}, configure_logging=False
        ),
    )
    seen: dict[str, list] = {"facts": [], "ticks": [], "crashes": []}

    async def create(request: bytes, context: aio.ServicerContext) -> bytes:
        async with rt.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO widgets (name) VALUES (:n)"), {"n": request.decode()}
            )
            await add_to_outbox(
                conn,
                message=StringValue(value=request.decode()),
                subject=FACT,
                aggregate_id=request.decode(),
            )
        rt.outbox_signal.notify()
        return (current_principal() or "-").encode()

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Create": grpc.unary_unary_rpc_method_handler(create)}
    )
    rt.add_grpc_service(
        SERVICE,
        lambda s, server: server.add_generic_rpc_handlers((s,)),
        handler,
        permissions={"Create": "definitions.write"},
    )

    async def on_fact(envelope: Envelope, msg: Msg) -> Outcome:
        async with rt.engine.begin() as conn:
            if await claim_message(conn, "projection", envelope.id):
                seen["facts"].append(decode(envelope))
        return Ack()

    rt.add_consumer(ConsumerSpec(facts_stream("definition"), "projection", [FACT], on_fact))

    async def ticker() -> None:
        while True:
            seen["ticks"].append(time.monotonic())
            await asyncio.sleep(0.05)

    async def crashes_once() -> None:
        seen["crashes"].append(1)
        if len(seen["crashes"]) == 1:
            raise RuntimeError("first run fails")

    rt.add_background_task("ticker", ticker)
    rt.add_background_task("crashes-once", crashes_once)
    return rt, seen


async def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_runtime_serves_publishes_consumes_and_stops(tmp_path: Path, nats_url: str) -> None:
    rt, seen = build(tmp_path, nats_url)
    await rt.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{rt.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for name in ("", SERVICE):
                status = (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                assert status == health_pb2.HealthCheckResponse.SERVING
            create = channel.unary_unary(f"/{SERVICE}/Create")
            started = time.monotonic()
            assert await create(b"w1", metadata=(("authorization", "Bearer tok"),)) == b"alice"
            # the relay polls every 30 s: only the wake-up after commit makes this fast
            await wait_until(lambda: len(seen["facts"]) == 1)
            assert time.monotonic() - started < 3
            assert seen["facts"] == [StringValue(value="w1")]
            with pytest.raises(aio.AioRpcError) as caught:
                await create(b"w2", metadata=(("authorization", "Bearer bad"),))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(aio.AioRpcError) as caught:
                await create(b"w3")  # anonymous, authentication on
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await wait_until(lambda: len(seen["crashes"]) == 2)  # restarted after the failure
        assert len(seen["ticks"]) > 0
    finally:
        await rt.stop()
    assert rt.grpc is None and rt.nc is None and rt.relay is None
    ticks = len(seen["ticks"])
    await asyncio.sleep(0.1)
    assert len(seen["ticks"]) == ticks  # background tasks are stopped


async def test_runtime_waits_for_nats_before_serving(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")  # not started yet
    rt, _ = build(tmp_path, server.url)
    starting = asyncio.create_task(rt.start())
    await asyncio.sleep(0.6)
    assert not starting.done()
    assert rt.grpc is None  # nothing is served before NATS is ready
    await server.start_async()
    try:
        await asyncio.wait_for(starting, 10)
        assert rt.grpc is not None and rt.grpc.serving
    finally:
        await rt.stop()
        await server.stop_async()


async def test_run_forever_stops_on_request(tmp_path: Path, nats_url: str) -> None:
    rt, _ = build(tmp_path, nats_url)
    running = asyncio.create_task(rt.run_forever())
    await wait_until(lambda: rt.grpc is not None and rt.grpc.serving)
    rt.request_stop()
    await asyncio.wait_for(running, 10)
    assert rt.grpc is None


async def test_a_stop_request_during_start_is_honoured(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")  # never started: start() keeps retrying
    rt, _ = build(tmp_path, server.url)
    running = asyncio.create_task(rt.run_forever())
    await asyncio.sleep(0.4)
    rt.request_stop()
    await asyncio.wait_for(running, 5)
    assert rt.grpc is None and rt.nc is None


async def test_without_tokens_calls_are_anonymous_and_a_warning_says_so(
    tmp_path: Path, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rt, _ = build(tmp_path, nats_url)
    rt.settings = dataclasses.replace(rt.settings, auth_tokens={})
    await rt.start()
    try:
        async with aio.insecure_channel(f"127.0.0.1:{rt.port}") as channel:
            assert await channel.unary_unary(f"/{SERVICE}/Create")(b"w9") == b"-"
    finally:
        await rt.stop()
    captured = capsys.readouterr()
    assert "authentication is off" in captured.out + captured.err
