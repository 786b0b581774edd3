"""Fixtures of the work service tests: a private nats-server, SQLite files and fresh
PostgreSQL databases, the service in-process over loopback gRPC, in-process executors."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from nats.js import JetStreamContext

from trinity.process.work.v1 import work_service_pb2_grpc
from trinity_platform.config import ServiceSettings
from trinity_platform.envelope import Envelope
from trinity_platform.runtime import RuntimeOptions
from trinity_platform.testing import find_nats_server, free_port, wait_for_port
from trinity_work.bootstrap import WorkOptions, WorkService, bootstrap
from trinity_work.executor.config import parse_config
from trinity_work.executor.worker import Executor


class SecuredNatsServer:
    """A nats-server started with a configuration file (users and permissions), which the
    platform's ``NatsServer`` does not take."""

    def __init__(self, directory: Path, config: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        store = self.directory / "store"
        store.mkdir(parents=True, exist_ok=True)
        path = self.directory / "nats.conf"
        path.write_text(self.config)
        argv = [find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*argv, "-sd", str(store), "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, 10.0)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[Callable[[str], SecuredNatsServer]]:
    """Start extra nats-servers with a configuration (users and permissions)."""
    servers: list[SecuredNatsServer] = []

    def start(config: str) -> SecuredNatsServer:
        server = SecuredNatsServer(tmp_path / f"nats-{len(servers)}", config)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


ServiceFactory = Callable[..., Awaitable[WorkService]]


@pytest.fixture
async def start_service(tmp_path: Path, nats_url: str) -> AsyncIterator[ServiceFactory]:
    """Start the work service in-process (real gRPC on a free port, real NATS, real DB)."""
    services: list[WorkService] = []

    async def start(
        database_url: str | None = None,
        *,
        lease_check_interval: float = 0.1,
        nats: str | None = None,
        **settings: Any,
    ) -> WorkService:
        values: dict[str, Any] = {
            "service": "work",
            "nats_url": nats or nats_url,
            "data_dir": tmp_path / "data",
            "database_url": database_url or f"sqlite+aiosqlite:///{tmp_path}/work.db",
            "listen": "127.0.0.1:0",
        }
        values.update(settings)
        service = bootstrap(
            ServiceSettings(**values),
            WorkOptions(lease_check_interval=lease_check_interval),
            RuntimeOptions(stop_grace=0.5, configure_logging=False, relay={"poll_interval": 0.2}),
        )
        await service.runtime.start()
        services.append(service)
        return service

    yield start
    for service in reversed(services):
        await service.runtime.stop()


@pytest.fixture
async def service(database_url: str, start_service: ServiceFactory) -> WorkService:
    # The database first: fixtures are torn down in reverse, so the service stops
    # before its (PostgreSQL) database is dropped, not while it still uses it.
    return await start_service(database_url)


@pytest.fixture
async def stub(service: WorkService) -> AsyncIterator[work_service_pb2_grpc.WorkServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.runtime.port}") as channel:
        yield work_service_pb2_grpc.WorkServiceStub(channel)


ExecutorFactory = Callable[..., Awaitable[Executor]]


@pytest.fixture
async def start_executor(tmp_path: Path, nats_url: str) -> AsyncIterator[ExecutorFactory]:
    """Start an executor in-process with a configuration given as a dict (the YAML's shape)."""
    executors: list[Executor] = []

    async def start(
        service: WorkService,
        config: dict[str, Any] | None = None,
        *,
        nats: str | None = None,
        token: str | None = None,
    ) -> Executor:
        data: dict[str, Any] = {
            "executor_id": f"executor-{len(executors) + 1}",
            "lease": "2s",
            "heartbeat_interval": "200ms",
            "shutdown_grace": "2s",
            "fetch_timeout": "300ms",
            "evidence_dir": str(tmp_path / "evidence"),
        }
        data.update(config or {})
        executor = Executor(
            parse_config(data, base_dir=tmp_path),
            target=f"127.0.0.1:{service.runtime.port}",
            nats_url=nats or nats_url,
            token=token,
        )
        await executor.start()
        executors.append(executor)
        return executor

    yield start
    for executor in reversed(executors):
        await executor.stop()


@pytest.fixture
async def js(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def read_stream(js: JetStreamContext, stream: str) -> list[Envelope]:
    """Every message still stored in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    envelopes = []
    if info.state.messages == 0:
        return envelopes
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            raw = await js.get_msg(stream, sequence)
        except nats.js.errors.NotFoundError:
            continue  # taken from a work-queue stream
        envelopes.append(
            Envelope.from_headers(dict(raw.headers or {}), raw.data or b"", raw.subject)
        )
    return envelopes


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


@pytest.fixture
def facts(js: JetStreamContext) -> Callable[[], Awaitable[list[Envelope]]]:
    """Reads the work facts stream."""

    async def read() -> list[Envelope]:
        return await read_stream(js, "TRINITY_PROCESS_WORK_FACTS")

    return read


@pytest.fixture
def wait_for() -> Callable[..., Awaitable[Any]]:
    return eventually


@pytest.fixture
async def sqlite_service(start_service: ServiceFactory, sqlite_url: str) -> WorkService:
    """The service on SQLite only (for executor behaviour that does not depend on the database)."""
    return await start_service(sqlite_url)


@pytest.fixture
async def sqlite_stub(
    sqlite_service: WorkService,
) -> AsyncIterator[work_service_pb2_grpc.WorkServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sqlite_service.runtime.port}") as channel:
        yield work_service_pb2_grpc.WorkServiceStub(channel)


FINAL_STATUSES = {3, 4, 5, 6}  # completed, failed, cancelled, timed out


@pytest.fixture
def finish() -> Callable[..., Awaitable[Any]]:
    """``await finish(stub, request)``: RequestWork, then wait for a final status."""

    async def run(
        stub: work_service_pb2_grpc.WorkServiceStub, request: Any, timeout: float = 15
    ) -> Any:
        from trinity.process.work.v1 import work_service_pb2

        work_id = (await stub.RequestWork(request)).work.id

        async def final() -> Any:
            work = (await stub.GetWork(work_service_pb2.GetWorkRequest(work_id=work_id))).work
            return work if work.status in FINAL_STATUSES else None

        return await eventually(final, timeout=timeout)

    return run
