"""One hostile-input suite for the fuzz tests and the log check that follows them.

The four services and an executor run as subprocesses on SQLite (and, when
``TRINITY_TEST_POSTGRES_URL`` is set, on PostgreSQL), against a NATS server that
requires a user and password given in ``TRINITY_NATS_URL``, with known bearer tokens.
Every secret of the suite is in :data:`SECRETS`, so a test can look for them in
every log afterwards.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1 import work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.testing.nats_server import find_nats_server
from trinity_platform.testing.ports import free_port, wait_for_port
from trinity_platform.testing.postgres import TemporaryPostgresDatabase
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import spec_to_proto

POSTGRES_ENV = "TRINITY_TEST_POSTGRES_URL"
NATS_USER = "fuzz-nats-user"
NATS_PASSWORD = f"nats-pw-{uuid.uuid4().hex}"
ADMIN_TOKEN = f"admin-token-{uuid.uuid4().hex}"
VIEWER_TOKEN = f"viewer-token-{uuid.uuid4().hex}"
PAGE_TOKEN_KEY = f"page-key-{uuid.uuid4().hex}"
# ``principal:role`` names a role where roles exist, and is a plain principal before.
# The admin token holds every role, so the fuzz reaches every RPC's handler.
TOKENS = {
    ADMIN_TOKEN: "fuzz-admin:admin+service+executor",
    VIEWER_TOKEN: "fuzz-viewer:viewer",
}
SECRETS = {
    "NATS password": NATS_PASSWORD,
    "admin token": ADMIN_TOKEN,
    "viewer token": VIEWER_TOKEN,
    "page token key": PAGE_TOKEN_KEY,
}
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)

PROCESS = """\
name: fuzz-echo
steps:
  - id: hello
    agent_task: {agent: echo, message: "hello {{ input.who }}"}
"""
SECOND_PROCESS = PROCESS.replace("fuzz-echo", "fuzz-second")


@dataclass
class FuzzSuite:
    suite: LocalSuite
    nats_log: Path
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    known_ids: list[str] = field(default_factory=list)

    def channel(self, service: str) -> grpc.Channel:
        if service not in self.channels:
            self.channels[service] = grpc.insecure_channel(
                f"127.0.0.1:{self.suite.ports[service]}",
                options=[("grpc.max_send_message_length", 8 * 1024 * 1024)],
            )
        return self.channels[service]

    def log_files(self) -> list[Path]:
        return [*sorted((self.suite.data_dir / "logs").glob("*.log")), self.nats_log]


def _start_nats(root: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = root / "nats.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                find_nats_server(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "-sd",
                str(root / "nats"),
                "--user",
                NATS_USER,
                "--pass",
                NATS_PASSWORD,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_for_port("127.0.0.1", port, 10)
    return process, port, log


def _seed(fuzz: FuzzSuite) -> None:
    """One published definition and one finished execution: ids the fuzzer can aim at."""
    definitions = DefinitionServiceStub(fuzz.channel("definition"))
    executions = ExecutionServiceStub(fuzz.channel("execution"))
    spec = spec_to_proto(parse_process(PROCESS))
    draft = definitions.CreateDraft(
        definition_service_pb2.CreateDraftRequest(request_id=uuid.uuid4().hex, spec=spec),
        metadata=ADMIN,
    )
    definitions.CreateDraft(  # a second definition: ListDefinitions has two pages of one
        definition_service_pb2.CreateDraftRequest(
            request_id=uuid.uuid4().hex, spec=spec_to_proto(parse_process(SECOND_PROCESS))
        ),
        metadata=ADMIN,
    )
    definitions.PublishDefinition(
        definition_service_pb2.PublishDefinitionRequest(
            request_id=uuid.uuid4().hex, definition_id=draft.definition.id
        ),
        metadata=ADMIN,
    )
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=uuid.uuid4().hex, process_name="fuzz-echo"
    )
    request.input.update({"who": "fuzz"})
    execution = executions.TriggerProcess(request, metadata=ADMIN).execution
    deadline = time.monotonic() + 60
    while execution.status != execution_pb2.EXECUTION_STATUS_COMPLETED:
        if time.monotonic() > deadline:
            raise AssertionError(f"seed execution did not complete: {execution}")
        time.sleep(0.1)
        execution = executions.GetExecution(
            execution_service_pb2.GetExecutionRequest(execution_id=execution.id), metadata=ADMIN
        ).execution
    work = WorkServiceStub(fuzz.channel("work")).ListWork(
        work_service_pb2.ListWorkRequest(execution_id=execution.id), metadata=ADMIN
    )
    fuzz.known_ids += [draft.definition.id, execution.id, *(w.id for w in work.work)]


def _postgres_urls(prefix: str) -> tuple[dict[str, str], Callable[[], None]]:
    admin_url = os.environ[POSTGRES_ENV]
    databases = {s: TemporaryPostgresDatabase(admin_url, prefix=f"{prefix}_{s}") for s in SERVICES}
    urls = {service: database.create() for service, database in databases.items()}
    return urls, lambda: [database.drop() for database in databases.values()]  # type: ignore[func-returns-value]


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzz_suite(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzSuite]:
    database_urls: dict[str, str] = {}
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if request.param == "postgres":
        if not os.environ.get(POSTGRES_ENV):
            pytest.skip(f"{POSTGRES_ENV} is not set; PostgreSQL fuzzing skipped")
        database_urls, drop = _postgres_urls("fuzz")
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    nats, nats_port, nats_log = _start_nats(root)
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:{nats_port}",
        ports={service: free_port() for service in SERVICES},
        database_urls=database_urls,
        extra_env={
            "TRINITY_AUTH_TOKENS": ",".join(f"{t}={p}" for t, p in TOKENS.items()),
            "TRINITY_PAGE_TOKEN_KEY": PAGE_TOKEN_KEY,
        },
    )
    fuzz = FuzzSuite(suite, nats_log)
    try:
        suite.start()
        suite.wait_healthy(120)
        _seed(fuzz)
        yield fuzz
    finally:
        for channel in fuzz.channels.values():
            channel.close()
        suite.stop()
        nats.terminate()
        nats.wait(10)
        drop()
