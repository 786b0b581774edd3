"""The whole suite as real subprocesses: free ports, a private NATS, SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from google.protobuf.message import Message
from nats.js import JetStreamContext

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.envelope import Envelope, message_class
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.postgres import TemporaryPostgresDatabase
from trinity_platform.testing.stubs import DefaultToken
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import spec_to_proto

pytestmark = pytest.mark.e2e

POSTGRES_ENV = "TRINITY_TEST_POSTGRES_URL"
FINISHED = (
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_FAILED,
    execution_pb2.EXECUTION_STATUS_CANCELLED,
    execution_pb2.EXECUTION_STATUS_COMPENSATION_FAILED,
)


def postgres_databases(prefix: str) -> tuple[dict[str, str], Callable[[], None]]:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL end-to-end tests skipped")
    databases = {s: TemporaryPostgresDatabase(admin_url, prefix=f"{prefix}_{s}") for s in SERVICES}
    urls = {service: database.create() for service, database in databases.items()}

    def drop() -> None:
        for database in databases.values():
            database.drop()

    return urls, drop


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def suite_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Per-service database URLs: {} for the SQLite defaults, or a fresh PostgreSQL database each."""
    if request.param == "sqlite":
        yield {}
        return
    urls, drop = postgres_databases("e2e")
    try:
        yield urls
    finally:
        drop()


@pytest.fixture
def make_suite(
    tmp_path: Path, nats_url: str, suite_database: dict[str, str]
) -> Iterator[Callable[..., LocalSuite]]:
    suites: list[LocalSuite] = []

    def make(**overrides: object) -> LocalSuite:
        options: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "nats_url": nats_url,
            "ports": {service: free_port() for service in SERVICES},
            "database_urls": suite_database,
        }
        options.update(overrides)
        suite = LocalSuite(**options)  # type: ignore[arg-type]
        suites.append(suite)
        return suite

    yield make
    for suite in suites:
        suite.stop()


@pytest.fixture
async def jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def read_stream(js: JetStreamContext, stream: str) -> list[Envelope]:
    """Every message of a stream, in stream order, as envelopes."""
    info = await js.stream_info(stream)
    envelopes = []
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        raw = await js.get_msg(stream, sequence)
        envelopes.append(
            Envelope.from_headers(dict(raw.headers or {}), raw.data or b"", raw.subject)
        )
    return envelopes


@pytest.fixture
def stream_reader(jetstream: JetStreamContext) -> Callable[[str], Awaitable[list[Envelope]]]:
    async def read(stream: str) -> list[Envelope]:
        return await read_stream(jetstream, stream)

    return read


# ------------------------------------------------------------ a running suite per module


class Client:
    """gRPC stubs of a running suite plus the waits scenario tests need.

    Calls carry ``token`` (default: the suite's admin token, when authentication is on)
    unless a call passes metadata of its own."""

    def __init__(self, suite: LocalSuite, token: str | None = None) -> None:
        self.suite = suite
        token = suite.admin_token if token is None else token
        self._channels = {
            s: grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports[s]}") for s in SERVICES
        }
        self.definitions = DefaultToken(DefinitionServiceStub(self._channels["definition"]), token)
        self.executions = DefaultToken(ExecutionServiceStub(self._channels["execution"]), token)
        self.approvals = DefaultToken(ApprovalServiceStub(self._channels["approval"]), token)
        self.work = DefaultToken(WorkServiceStub(self._channels["work"]), token)
        self._keys = 0

    def key(self, prefix: str = "k") -> str:
        self._keys += 1
        return f"{prefix}-{self._keys}-{time.monotonic_ns()}"

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def publish(self, process_yaml: str) -> str:
        spec = spec_to_proto(parse_process(process_yaml))
        draft = await self.definitions.CreateDraft(
            definition_service_pb2.CreateDraftRequest(request_id=self.key("draft"), spec=spec)
        )
        published = await self.definitions.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id=self.key("publish"), definition_id=draft.definition.id
            )
        )
        return str(published.definition.version)

    async def trigger(self, name: str, **input: Any) -> str:
        request = execution_service_pb2.TriggerProcessRequest(
            request_id=self.key("run"), process_name=name
        )
        request.input.update(input)
        reply = await self.executions.TriggerProcess(request)
        return str(reply.execution.id)

    async def get(self, execution_id: str) -> execution_pb2.Execution:
        reply = await self.executions.GetExecution(
            execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
        )
        return reply.execution

    async def facts(self, execution_id: str, until: tuple[type[Message], ...]) -> list[Any]:
        """The execution's facts in order (WatchExecution), up to the first of a type in ``until``."""
        found = []
        async for item in self.executions.WatchExecution(
            execution_service_pb2.WatchExecutionRequest(execution_id=execution_id)
        ):
            fact = message_class(item.type)()
            item.fact.Unpack(fact)
            found.append(fact)
            if isinstance(fact, until):
                break
        return found

    async def wait(
        self,
        execution_id: str,
        until: Callable[[execution_pb2.Execution], bool] = lambda e: e.status in FINISHED,
        timeout: float = 45.0,
    ) -> execution_pb2.Execution:
        deadline = time.monotonic() + timeout
        while True:
            execution = await self.get(execution_id)
            if until(execution):
                return execution
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting on {execution}\n{self.suite.log_tail('execution')}"
                )
            await asyncio.sleep(0.05)

    async def pending_approval(
        self, execution_id: str, timeout: float = 30.0
    ) -> approval_pb2.Approval:
        deadline = time.monotonic() + timeout
        while True:
            reply = await self.approvals.ListApprovals(
                approval_service_pb2.ListApprovalsRequest(execution_id=execution_id)
            )
            pending = [
                a for a in reply.approvals if a.status == approval_pb2.APPROVAL_STATUS_PENDING
            ]
            if pending:
                return pending[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no pending approval for {execution_id}")
            await asyncio.sleep(0.05)

    async def decide(
        self, approval_id: str, decision: int, token: str, comment: str = ""
    ) -> approval_pb2.Approval:
        reply = await self.approvals.SubmitDecision(
            approval_service_pb2.SubmitDecisionRequest(
                request_id=self.key("decide"),
                approval_id=approval_id,
                decision=decision,  # type: ignore[arg-type]
                comment=comment,
            ),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        return reply.approval


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def module_suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalSuite, NatsServer]]:
    """One suite for a whole test module, on SQLite and then on PostgreSQL."""
    yield from suite_for_module(request.module, request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def sqlite_module_suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalSuite, NatsServer]]:
    """The module's suite on SQLite only (for modules whose checks do not depend on the
    database: they override ``module_suite`` with this)."""
    yield from suite_for_module(request.module, "sqlite", tmp_path_factory)


def suite_for_module(
    module: Any, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalSuite, NatsServer]]:
    """The suite a test module describes, on ``database`` ("sqlite" or "postgres").

    The module says how: EXECUTOR_CONFIG (the executor's YAML), EXECUTOR_FILES
    (files written beside it), TOKENS (bearer token → "principal" or "principal:roles")
    and EXTRA_ENV (more settings of every process).
    """
    tokens: dict[str, str] = getattr(module, "TOKENS", {})
    root = tmp_path_factory.mktemp("suite")
    drop: Callable[[], None] = lambda: None  # noqa: E731
    database_urls: dict[str, str] = {}
    if database == "postgres":
        database_urls, drop = postgres_databases("e2e_mod")
    nats_server = NatsServer(root / "nats")
    nats_server.start()
    config = root / "executor.yaml"
    config.write_text(module.EXECUTOR_CONFIG)
    for name, text in getattr(module, "EXECUTOR_FILES", {}).items():
        (root / name).write_text(text)
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=nats_server.url,
        ports={service: free_port() for service in SERVICES},
        database_urls=database_urls,
        executor_config=config,
        executors=getattr(module, "EXECUTORS", 1),
        extra_env={
            "TRINITY_AUTH_TOKENS": ",".join(f"{t}={p}" for t, p in tokens.items()),
            **getattr(module, "EXTRA_ENV", {}),
        },
    )
    try:
        suite.start()
        suite.wait_healthy(90)
        yield suite, nats_server
    finally:
        suite.stop()
        nats_server.stop()
        drop()


@pytest.fixture
async def api(module_suite: tuple[LocalSuite, NatsServer]) -> AsyncIterator[Client]:
    suite, _nats = module_suite
    client = Client(suite)
    yield client
    await client.close()
