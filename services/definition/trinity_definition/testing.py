"""Test support: a running definition service on loopback, and example specs.

Used by this service's tests, its benchmark and cross-service tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
from google.protobuf import duration_pb2
from nats.aio.client import Client as NATS

from trinity.process.common.v1 import enums_pb2
from trinity.process.definition.v1 import definition_pb2 as d
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity_definition.bootstrap import bootstrap
from trinity_definition.codec import spec_of
from trinity_platform.config import ServiceSettings
from trinity_platform.envelope import Envelope
from trinity_platform.runtime import RuntimeOptions, ServiceRuntime

FACTS_STREAM = "TRINITY_PROCESS_DEFINITION_FACTS"


@dataclass
class RunningService:
    runtime: ServiceRuntime
    channel: grpc.aio.Channel
    stub: DefinitionServiceStub
    nc: NATS

    async def facts_of(self, aggregate_id: str, count: int, wait: float = 10.0) -> list[Envelope]:
        """The facts about ``aggregate_id`` (``ce-subject``) in the facts stream, in order;
        waits up to ``wait`` seconds for at least ``count`` of them."""
        js = self.nc.jetstream()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        found: list[Envelope] = []
        next_seq = 0
        while True:
            info = await js.stream_info(FACTS_STREAM)
            for seq in range(max(next_seq, info.state.first_seq, 1), info.state.last_seq + 1):
                raw = await js.get_msg(FACTS_STREAM, seq)
                headers = dict(raw.headers or {})
                if headers.get("ce-subject") == aggregate_id:
                    found.append(Envelope.from_headers(headers, raw.data or b"", raw.subject or ""))
            next_seq = info.state.last_seq + 1
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_service(
    database_url: str, nats_url: str, data_dir: Path
) -> AsyncIterator[RunningService]:
    """The service on a free loopback port, with a client channel and a NATS connection."""
    settings = ServiceSettings(
        service="definition",
        nats_url=nats_url,
        data_dir=data_dir,
        database_url=database_url,
        listen="127.0.0.1:0",
    )
    runtime = bootstrap(settings, options=RuntimeOptions(stop_grace=0.5, configure_logging=False))
    await runtime.start()
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}")
        nc = await nats.connect(nats_url)
        try:
            yield RunningService(runtime, channel, DefinitionServiceStub(channel), nc)
        finally:
            await nc.close()
            await channel.close()
    finally:
        await runtime.stop()


# --------------------------------------------------------------------------- specs


def same_spec(left: d.ProcessSpec, right: d.ProcessSpec) -> bool:
    """Equal as process specs (the codec writes defaults in one canonical form)."""
    return bool(spec_of(left) == spec_of(right))


def seconds(value: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=value)


def agent_step(step_id: str, *depends_on: str, message: str = "Do {{ input.topic }}") -> d.Step:
    return d.Step(
        id=step_id,
        name=step_id.title(),
        depends_on=list(depends_on),
        timeout=seconds(600),
        agent_task=d.AgentTask(agent="researcher", message=message),
    )


def valid_spec(name: str = "research-report") -> d.ProcessSpec:
    """Research → review gateway (loop back at most 3 times) → approval → notification."""
    return d.ProcessSpec(
        name=name,
        description="Research a topic and report",
        steps=[
            agent_step("research"),
            agent_step("write", "research", message="Write about {{ steps.research.output }}"),
            d.Step(
                id="review",
                depends_on=["write"],
                gateway=d.Gateway(
                    type=d.GATEWAY_TYPE_EXCLUSIVE,
                    routes=[
                        d.Route(
                            target="research",
                            condition="steps.write.output == 'redo'",
                            max_iterations=3,
                        ),
                        d.Route(target="approve", is_default=True),
                    ],
                ),
            ),
            d.Step(
                id="approve",
                timeout=seconds(3600),
                human_approval=d.HumanApproval(
                    approvers=["lead@example.com"],
                    on_timeout=enums_pb2.TIMEOUT_ACTION_REJECT,
                    artifacts=["{{ steps.write.output }}"],
                ),
            ),
            d.Step(
                id="announce",
                depends_on=["approve"],
                notification=d.Notification(
                    channel=enums_pb2.CHANNEL_WEBHOOK,
                    target="https://example.com/hook",
                    message="Done: {{ steps.write.output }}",
                ),
            ),
        ],
        triggers=[d.Trigger(manual=d.ManualTrigger())],
    )


def chain_spec(name: str, length: int) -> d.ProcessSpec:
    steps = [agent_step("s0")]
    steps += [agent_step(f"s{i}", f"s{i - 1}") for i in range(1, length)]
    return d.ProcessSpec(name=name, steps=steps)


VALID_YAML = """\
name: yaml-process
description: From the authoring format
steps:
  - id: research
    agent_task:
      agent: researcher
      message: "Research {{ input.topic }}"
    timeout: 10m
  - id: notify
    depends_on: [research]
    notification:
      channel: webhook
      target: https://example.com/hook
      message: "Done: {{ steps.research.output }}"
"""
