"""Fixtures of the approval service tests: the real service in-process (gRPC over
loopback, real NATS JetStream, SQLite or PostgreSQL), a recording work-service peer
(a real gRPC server), clients with bearer tokens, and a reader of the facts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.work.v1 import work_pb2, work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import (
    WorkServiceServicer,
    add_WorkServiceServicer_to_server,
)
from trinity_approval.bootstrap import ApprovalService, bootstrap
from trinity_approval.config import ApprovalSettings
from trinity_platform.authz import Identity
from trinity_platform.config import ServiceSettings
from trinity_platform.envelope import Envelope, decode
from trinity_platform.runtime import RuntimeOptions
from trinity_platform.subjects import all_facts_subject, facts_stream
from trinity_platform.testing import NatsServer
from trinity_platform.testing.stubs import DefaultToken

TOKENS = {
    "tok-alice": Identity("alice@example.com"),  # the default roles: viewer + approver
    "tok-bob": Identity("bob"),
    "tok-mallory": Identity("mallory@example.com"),
    "tok-executor": Identity("service:execution", frozenset({"service", "viewer"})),
    "tok-other-service": Identity("service:other", frozenset({"service"})),
}


@pytest.fixture
def nats_url(nats_server_session: NatsServer) -> str:
    """One JetStream server for the module's tests (facts are told apart by approval id)."""
    return nats_server_session.url


# ---------------------------------------------------------------------- work peer


@dataclass
class RecordingWork(WorkServiceServicer):
    """A work service that records RequestWork calls and the items of RequestWorkBatch
    calls (idempotent by request_id).

    ``refuse_with`` makes it answer every call with that status code (e.g. UNAVAILABLE).
    """

    calls: list[work_service_pb2.RequestWorkRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    refuse_with: grpc.StatusCode | None = None
    accepted: dict[str, work_pb2.WorkRequest] = field(default_factory=dict)
    batch_calls: list[int] = field(default_factory=list)
    """The items of each RequestWorkBatch call."""
    batches: bool = True
    unimplemented: int = 0
    """RequestWorkBatch calls answered UNIMPLEMENTED (``batches`` off)."""

    async def RequestWork(
        self, request: work_service_pb2.RequestWorkRequest, context: Any
    ) -> work_service_pb2.RequestWorkResponse:
        self.calls.append(request)
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "refused by the test")
        return work_service_pb2.RequestWorkResponse(work=self._accept(request))

    async def RequestWorkBatch(
        self, request: work_service_pb2.RequestWorkBatchRequest, context: Any
    ) -> work_service_pb2.RequestWorkBatchResponse:
        if not self.batches:  # an older work service, without the batch RPC
            self.unimplemented += 1
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self.batch_calls.append(len(request.items))
        for item in request.items:
            self.calls.append(item.request)
            self.metadata.append({k: v for k, v in context.invocation_metadata()})
        if self.refuse_with is not None:
            await context.abort(self.refuse_with, "refused by the test")
        return work_service_pb2.RequestWorkBatchResponse(
            results=[
                work_service_pb2.RequestWorkResult(work=self._accept(item.request))
                for item in request.items
            ]
        )

    def _accept(self, request: work_service_pb2.RequestWorkRequest) -> work_pb2.WorkRequest:
        work = self.accepted.get(request.request_id)
        if work is None:
            work = work_pb2.WorkRequest(
                id=f"work-{len(self.accepted) + 1}",
                request_id=request.request_id,
                kind=work_pb2.WORK_KIND_NOTIFICATION,
                payload=request.payload,
                status=work_pb2.WORK_STATUS_REQUESTED,
            )
            self.accepted[request.request_id] = work
        return work

    def accepted_for(self, approval_id: str) -> list[work_pb2.WorkRequest]:
        return [w for k, w in self.accepted.items() if k.startswith(f"approval/{approval_id}/")]


@dataclass
class WorkPeer:
    servicer: RecordingWork
    target: str


async def _start_peer(port: int = 0) -> tuple[grpc.aio.Server, WorkPeer]:
    server = grpc.aio.server()
    servicer = RecordingWork()
    add_WorkServiceServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, WorkPeer(servicer, f"127.0.0.1:{bound}")


@pytest.fixture
async def work_peer() -> AsyncIterator[WorkPeer]:
    server, peer = await _start_peer()
    yield peer
    await server.stop(None)


@pytest.fixture
async def start_work_peer() -> AsyncIterator[Callable[[int], Awaitable[WorkPeer]]]:
    """Start another recording work service on a given port (e.g. one that was down)."""
    servers: list[grpc.aio.Server] = []

    async def start(port: int) -> WorkPeer:
        server, peer = await _start_peer(port)
        servers.append(server)
        return peer

    yield start
    for server in servers:
        await server.stop(None)


# ---------------------------------------------------------------------- the service

ServiceFactory = Callable[..., Awaitable[ApprovalService]]


@pytest.fixture
async def make_service(
    database_url: str, nats_url: str, work_peer: WorkPeer, tmp_path: Path
) -> AsyncIterator[ServiceFactory]:
    started: list[ApprovalService] = []

    async def make(**overrides: Any) -> ApprovalService:
        settings = ServiceSettings(
            service="approval",
            nats_url=nats_url,
            data_dir=tmp_path,
            database_url=overrides.pop("database_url", database_url),
            listen="127.0.0.1:0",
            auth_tokens=overrides.pop("auth_tokens", TOKENS),
        )
        config = ApprovalSettings(
            work_target=overrides.pop("work_target", work_peer.target),
            work_token=overrides.pop("work_token", ""),
            deadline_poll_interval=0.05,
            dispatch_poll_interval=0.05,
            dispatch_max_backoff=0.2,
            requesters=overrides.pop("requesters", frozenset()),
        )
        options = RuntimeOptions(stop_grace=0.5, configure_logging=False)
        service = bootstrap(settings, config, options=options, **overrides)
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        with contextlib.suppress(Exception):
            await service.stop()


@pytest.fixture
async def service(make_service: ServiceFactory) -> ApprovalService:
    return await make_service()


class Client:
    """ApprovalService stubs: ``stub`` calls as the execution service unless a call sends
    its own token (``token(principal)``); ``bare`` sends none."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self.stub = DefaultToken(ApprovalServiceStub(self._channel), "tok-executor")
        self.bare = ApprovalServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    @staticmethod
    def token(principal: str) -> tuple[tuple[str, str], ...]:
        for token, identity in TOKENS.items():
            if identity.principal == principal:
                return (("authorization", f"Bearer {token}"),)
        raise KeyError(principal)

    async def request(self, **fields: Any) -> api.RequestApprovalResponse:
        values: dict[str, Any] = {
            "request_id": "req-1",
            "execution_id": "exec-1",
            "step_id": "review",
            "iteration": 1,
            "title": "Review the release notes",
            "approvers": ["alice@example.com", "bob"],
            "on_timeout": 2,  # REJECT
        }
        timeout = fields.pop("timeout_s", 3600.0)
        values.update(fields)
        request = api.RequestApprovalRequest(**values)
        if timeout is not None:
            request.timeout.FromNanoseconds(int(timeout * 1e9))
        return await self.stub.RequestApproval(request, timeout=10)

    async def decide(
        self, approval_id: str, decision: int, *, as_: str | None, request_id: str = "", **kw: Any
    ) -> api.SubmitDecisionResponse:
        stub, metadata = (self.stub, self.token(as_)) if as_ else (self.bare, None)
        return await stub.SubmitDecision(
            api.SubmitDecisionRequest(
                request_id=request_id, approval_id=approval_id, decision=decision, **kw
            ),
            metadata=metadata,
            timeout=10,
        )

    async def get(self, approval_id: str) -> api.GetApprovalResponse:
        return await self.stub.GetApproval(
            api.GetApprovalRequest(approval_id=approval_id), timeout=10
        )


@pytest.fixture
def connect() -> Callable[[ApprovalService], contextlib.AbstractAsyncContextManager[Client]]:
    """``async with connect(service) as client``: a client of that service instance."""

    @contextlib.asynccontextmanager
    async def open_client(service: ApprovalService) -> AsyncIterator[Client]:
        client = Client(f"127.0.0.1:{service.port}")
        try:
            yield client
        finally:
            await client.close()

    return open_client


@pytest.fixture
async def client(service: ApprovalService) -> AsyncIterator[Client]:
    client = Client(f"127.0.0.1:{service.port}")
    try:
        yield client
    finally:
        await client.close()


# ---------------------------------------------------------------------- facts


class Facts:
    """Reads the approval facts stream (all messages, filtered by approval id)."""

    def __init__(self, js: Any) -> None:
        self._js = js

    async def of(self, approval_id: str) -> list[tuple[Envelope, Any]]:
        try:
            info = await self._js.stream_info(facts_stream("approval"))
        except NotFoundError:
            return []
        last = info.state.last_seq
        if not last:
            return []
        sub = await self._js.subscribe(
            all_facts_subject("approval"),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        found = []
        try:
            while True:
                msg = await sub.next_msg(timeout=5)
                envelope = Envelope.from_msg(msg)
                if envelope.subject == approval_id:
                    found.append((envelope, decode(envelope)))
                if msg.metadata.sequence.stream >= last:
                    break
        finally:
            await sub.unsubscribe()
        return found

    async def wait(
        self, approval_id: str, count: int, timeout: float = 10.0
    ) -> list[tuple[Envelope, Any]]:
        """The approval's facts once there are at least ``count`` of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = await self.of(approval_id)
            if len(found) >= count or loop.time() > deadline:
                return found
            await asyncio.sleep(0.05)

    async def published(self, approval_id: str, service: ApprovalService) -> list[str]:
        """The fact names of an approval once ``service`` published all it committed."""
        relay = service.runtime.relay
        assert relay is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await relay.pending():
            assert loop.time() < deadline, "the outbox was not published in time"
            await asyncio.sleep(0.02)
        return [envelope.type.rsplit(".", 1)[-1] for envelope, _ in await self.of(approval_id)]


@pytest.fixture
async def facts(nats_url: str) -> AsyncIterator[Facts]:
    nc = await nats.connect(nats_url)
    yield Facts(nc.jetstream())
    await nc.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    return eventually
