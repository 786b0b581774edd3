"""``python -m trinity_definition`` serves gRPC with health and reflection, and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity_definition.testing import valid_spec
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port, wait_for_port


async def test_module_entry_point(nats_server_session: NatsServer, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TRINITY_NATS_URL": nats_server_session.url,
        "TRINITY_DATA_DIR": str(tmp_path / "data"),
        "TRINITY_DEFINITION_LISTEN": f"127.0.0.1:{port}",
        "TRINITY_LOG_LEVEL": "WARNING",
    }
    env.pop("TRINITY_DEFINITION_DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trinity_definition",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 60)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(100):
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = DefinitionServiceStub(channel)
            draft = await stub.CreateDraft(pb.CreateDraftRequest(spec=valid_spec()))
            published = await stub.PublishDefinition(
                pb.PublishDefinitionRequest(definition_id=draft.definition.id)
            )
            assert published.definition.version == "1.0"
        assert (tmp_path / "data" / "definition.db").exists()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
