"""The production shape on one machine: two replicas of every service against
PostgreSQL (one database per service) and one NATS, running the examples to completion.

    deploy/local-replicas.sh [--postgres URL] [--runs N] [--keep] [--json FILE]
    (= .venv/bin/python deploy/local_replicas.py …)

What it does:

1. creates one PostgreSQL database per service (next to ``--postgres``, default
   ``$TRINITY_TEST_POSTGRES_URL`` or ``postgresql://postgres@127.0.0.1:5432/postgres``),
   starts a private NATS on a free port with the broker permissions of
   ``deploy/k8s/base/nats/authorization.conf`` (every process connects as its own user), then
   two processes of each service (each on its own port) and two executors. Every
   client reaches a service through the list of both its addresses
   (``TRINITY_<SERVICE>_TARGET=127.0.0.1:p0,127.0.0.1:p1``): round_robin over both,
   health-checked, as ``dns:///`` over a headless Service does on Kubernetes;
2. publishes every ``examples/*/process.yaml`` and runs each ``--runs`` times at once,
   deciding the human approvals with the approvers' bearer tokens;
3. kills (SIGKILL) the first replica of every service and stops the first executor,
   measures how long until every service answers again through its second replica
   (no restart), and runs each example once more: only the second replicas can now
   answer calls, consume the facts, fire the timers, relay and take the work;
4. checks the outcome: every execution completed with the steps it should have; every
   fact is in its stream once (no duplicate message id, one ProcessCompleted per
   execution, one WorkCompleted per work request); each file notification was written
   once per execution; the second phase's work was run by the second executor; no
   process died but those killed on purpose.

Exit 0 when all holds, 1 with the problems listed, 2 when PostgreSQL is unreachable.
The databases are dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceStub
from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity.process.work.v1 import work_service_pb2
from trinity.process.work.v1.work_service_pb2_grpc import WorkServiceStub
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.channels import open_channel
from trinity_platform.envelope import Envelope, decode
from trinity_platform.nats_connect import NatsSecurity, connect_nats
from trinity_platform.subjects import facts_stream
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port
from trinity_platform.testing.postgres import TemporaryPostgresDatabase
from trinity_platform.testing.stubs import DefaultToken
from trinity_process_model.authoring import parse_process
from trinity_process_model.proto_codec import spec_to_proto

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# The one the Kubernetes manifests ship (the nats-config ConfigMap).
NATS_AUTHORIZATION = ROOT / "deploy" / "k8s" / "base" / "nats" / "authorization.conf"
# Every user it declares needs a password, or the server refuses to start; nothing here
# runs as `provisioner` (the services apply the streams themselves).
NATS_USERS = (*SERVICES, "executor", "subscriber", "provisioner")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
REPLICAS = 2
SECOND_EXECUTOR_ID = "replica-2-executor"
WORK_ENDED = ("WorkCompleted", "WorkFailed", "WorkCancelled")

# Bearer token → principal; the examples' approvers. The suite adds its own service,
# executor and admin tokens; the second executor's is here, as it joins that suite.
TOKENS = {"reviewer-token": "reviewer@example.com", "lead-token": "lead@example.com"}
SECOND_EXECUTOR_TOKEN = secrets.token_urlsafe(18)
APPROVE = approval_pb2.DECISION_APPROVE
REQUEST_CHANGES = approval_pb2.DECISION_REQUEST_CHANGES


@dataclass(frozen=True)
class Scenario:
    """How to drive one example: its input, the decisions in order (the rest approve),
    the steps that must have completed and the file notifications (target → lines)
    one execution writes."""

    input: dict[str, Any]
    decisions: tuple[int, ...] = ()
    completed_steps: tuple[str, ...] = ()
    notifications: dict[str, int] = field(default_factory=dict)


SCENARIOS = {
    "research-review": Scenario(
        input={"topic": "durable execution"},
        decisions=(REQUEST_CHANGES, APPROVE),  # one revision round, then approved
        completed_steps=("research", "review", "decide", "cool_down", "publish"),
        notifications={"research-review.jsonl": 1},
    ),
    "governance-run": Scenario(
        input={"request": "add invoice export", "component": "billing-api"},
        completed_steps=(
            *("triage", "requirement_gate", "scaffold", "code", "verify", "checks"),
            *("release_gate", "publish", "announce"),
        ),
        notifications={"governance-run.jsonl": 1},
    ),
    "weekly-report": Scenario(
        input={"period": "last week"},
        completed_steps=("gather", "write", "deliver"),
        notifications={"weekly-report.jsonl": 1, "weekly-report-runs.jsonl": 1},
    ),
}
FINISHED = (
    execution_pb2.EXECUTION_STATUS_COMPLETED,
    execution_pb2.EXECUTION_STATUS_FAILED,
    execution_pb2.EXECUTION_STATUS_CANCELLED,
)


@dataclass
class Outcome:
    example: str
    phase: int
    execution_id: str
    status: str
    steps: dict[str, str]
    decisions: int
    seconds: float
    executors: list[str] = field(default_factory=list)


@dataclass
class Failover:
    """After the first replica of every service was killed: how long until each
    service answered through its second replica, and the calls that failed meanwhile."""

    seconds: dict[str, float]
    failed_calls: int


@dataclass
class Report:
    databases: dict[str, str]
    nats_url: str
    processes: dict[str, int]
    outcomes: list[Outcome]
    problems: list[str]
    notes: list[str]
    seconds: float
    failover: Failover | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def example_files() -> dict[str, Path]:
    """The examples this run knows how to drive (SCENARIOS); the others are listed in
    the report's notes (e.g. pull-request-ci waits for a message from a CI system)."""
    return {
        path.parent.name: path
        for path in sorted(EXAMPLES.glob("*/process.yaml"))
        if path.parent.name in SCENARIOS
    }


def undriven_examples() -> list[str]:
    return sorted(
        p.parent.name for p in EXAMPLES.glob("*/process.yaml") if p.parent.name not in SCENARIOS
    )


class Cluster:
    """The processes: NATS, two replicas of each service, two executors."""

    def __init__(self, data_dir: Path, admin_url: str, keep: bool = False) -> None:
        self.data_dir = data_dir
        self.admin_url = admin_url
        self.keep = keep
        self.databases = {
            s: TemporaryPostgresDatabase(admin_url, prefix=f"trinity_replicas_{s}")
            for s in SERVICES
        }
        # NATS reads the passwords from its environment (letters and digits).
        self.nats_passwords = {user: "p" + secrets.token_hex(16) for user in NATS_USERS}
        self.nats = NatsServer(
            data_dir / "nats",
            config=NATS_AUTHORIZATION,
            env={f"TRINITY_NATS_{u.upper()}_PASSWORD": pw for u, pw in self.nats_passwords.items()},
        )
        self.ports = {s: [free_port() for _ in range(REPLICAS)] for s in SERVICES}
        # Every client reaches every replica of a service.
        self.targets = {
            s: ",".join(f"127.0.0.1:{port}" for port in ports) for s, ports in self.ports.items()
        }
        identities = [f"{t}={p}" for t, p in TOKENS.items()]
        identities.append(f"{SECOND_EXECUTOR_TOKEN}={SECOND_EXECUTOR_ID}:executor")
        env = {
            "TRINITY_AUTH_TOKENS": ",".join(identities),
            **{f"TRINITY_{s.upper()}_TARGET": target for s, target in self.targets.items()},
        }
        process_env = {
            role: {"TRINITY_NATS_USER": role, "TRINITY_NATS_PASSWORD": self.nats_passwords[role]}
            for role in (*SERVICES, "executor")
        }
        self.suite = LocalSuite(
            data_dir=data_dir / "suite",
            nats_url=self.nats.url,
            ports={s: ports[0] for s, ports in self.ports.items()},
            database_urls={},  # set in start(), once the databases exist
            executor_config=EXAMPLES / "executor.yaml",
            executors=1,
            extra_env=env,
            process_env=process_env,
        )
        self.second = LocalSuite(
            data_dir=data_dir / "executor-2",
            nats_url=self.nats.url,
            ports=self.suite.ports,
            executor_config=EXAMPLES / "executor.yaml",
            executors=1,
            services=(),
            own_identities=False,
            extra_env={
                **env,
                "TRINITY_EXECUTOR_ID": SECOND_EXECUTOR_ID,
                "TRINITY_EXECUTOR_TOKEN": SECOND_EXECUTOR_TOKEN,
            },
            process_env=process_env,
        )
        self.replica_names: dict[str, list[str]] = {s: [s] for s in SERVICES}

    def start(self) -> None:
        self.suite.database_urls = {s: db.create() for s, db in self.databases.items()}
        self.nats.start()
        self.suite.start()
        for service in SERVICES:
            name = self.suite.start_replica(service, 1, self.ports[service][1])
            self.replica_names[service].append(name)
        self.second.start()
        for service in SERVICES:
            for name, port in zip(self.replica_names[service], self.ports[service], strict=True):
                self.suite.wait_serving(port, name, timeout=180)

    def stop(self) -> None:
        try:
            self.second.stop()
            self.suite.stop()
            self.nats.stop()
        finally:
            if not self.keep:
                for database in self.databases.values():
                    database.drop()

    @property
    def subscriber(self) -> NatsSecurity:
        return NatsSecurity(user="subscriber", password=self.nats_passwords["subscriber"])

    def processes(self) -> dict[str, int | None]:
        running = dict(self.suite.running)
        running.update({f"second-{k}": v for k, v in self.second.running.items()})
        return running


class Clients:
    """Stubs of every service, each over one channel to all its replicas (round_robin,
    health-checked: a replica that is gone takes no calls)."""

    def __init__(self, cluster: Cluster) -> None:
        token = cluster.suite.admin_token  # the approvers decide with their own
        self.channels = {s: open_channel(cluster.targets[s]) for s in SERVICES}
        self.definitions: DefinitionServiceStub = DefaultToken(  # type: ignore[assignment]
            DefinitionServiceStub(self.channels["definition"]), token
        )
        self.executions: ExecutionServiceStub = DefaultToken(  # type: ignore[assignment]
            ExecutionServiceStub(self.channels["execution"]), token
        )
        self.approvals: ApprovalServiceStub = DefaultToken(  # type: ignore[assignment]
            ApprovalServiceStub(self.channels["approval"]), token
        )
        self.work: WorkServiceStub = DefaultToken(  # type: ignore[assignment]
            WorkServiceStub(self.channels["work"]), token
        )

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


def key(prefix: str) -> str:
    return f"{prefix}-{time.time_ns()}-{os.getpid()}"


async def publish(clients: Clients, files: dict[str, Path]) -> None:
    for path in files.values():
        spec = spec_to_proto(parse_process(path.read_text()))
        definitions = clients.definitions
        draft = await definitions.CreateDraft(
            definition_service_pb2.CreateDraftRequest(request_id=key("draft"), spec=spec)
        )
        await definitions.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id=key("publish"), definition_id=draft.definition.id
            )
        )


async def drive(
    clients: Clients,
    example: str,
    phase: int,
    wait_seconds: float,
) -> Outcome:
    """Trigger one execution, decide its approvals, wait until it ends (every call goes
    to whichever replica round_robin picks)."""
    scenario = SCENARIOS.get(example, Scenario(input={}))
    started = time.monotonic()
    request = execution_service_pb2.TriggerProcessRequest(
        request_id=key("run"), process_name=example
    )
    request.input.update(scenario.input)
    execution = (await clients.executions.TriggerProcess(request)).execution
    decided = 0
    while True:
        execution = (
            await clients.executions.GetExecution(
                execution_service_pb2.GetExecutionRequest(execution_id=execution.id)
            )
        ).execution
        if execution.status in FINISHED:
            break
        if time.monotonic() - started > wait_seconds:
            break
        pending = await clients.approvals.ListApprovals(
            approval_service_pb2.ListApprovalsRequest(execution_id=execution.id)
        )
        for approval in pending.approvals:
            if approval.status != approval_pb2.APPROVAL_STATUS_PENDING:
                continue
            token = next(t for t, p in TOKENS.items() if p in approval.approvers)
            decision = scenario.decisions[decided] if decided < len(scenario.decisions) else APPROVE
            await clients.approvals.SubmitDecision(
                approval_service_pb2.SubmitDecisionRequest(
                    request_id=key("decide"),
                    approval_id=approval.id,
                    decision=decision,  # type: ignore[arg-type]
                    comment=f"decided by {TOKENS[token]} through local_replicas",
                ),
                metadata=(("authorization", f"Bearer {token}"),),
            )
            decided += 1
        await asyncio.sleep(0.2)
    work = await clients.work.ListWork(
        work_service_pb2.ListWorkRequest(execution_id=execution.id, page_size=100)
    )
    return Outcome(
        example=example,
        phase=phase,
        execution_id=execution.id,
        status=execution_pb2.ExecutionStatus.Name(execution.status),
        steps={s.step_id: execution_pb2.StepStatus.Name(s.status) for s in execution.steps},
        decisions=decided,
        seconds=round(time.monotonic() - started, 2),
        executors=sorted({w.executor_id for w in work.work}),
    )


async def read_facts(nats_url: str, security: NatsSecurity) -> dict[str, list[Envelope]]:
    nc = await connect_nats(nats_url, name="local-replicas-check", security=security, retry=False)
    try:
        js = nc.jetstream()
        streams = {}
        for service in SERVICES:
            name = facts_stream(service)
            info = await js.stream_info(name)
            envelopes = []
            for sequence in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(name, sequence)
                envelopes.append(
                    Envelope.from_headers(dict(raw.headers or {}), raw.data or b"", raw.subject)
                )
            streams[name] = envelopes
        return streams
    finally:
        await nc.close()


def notes(streams: dict[str, list[Envelope]]) -> list[str]:
    """What is worth knowing but not wrong."""
    emails = sum(
        1
        for e in streams[facts_stream("work")]
        if e.type.endswith(".WorkFailed") and decode(e).error.code == "CHANNEL_NOT_CONFIGURED"  # type: ignore[attr-defined]
    )
    counts = {stream: len(envelopes) for stream, envelopes in streams.items()}
    lines = [f"facts stored: {counts}"]
    if undriven_examples():
        lines.append(f"examples not driven (no scenario here): {', '.join(undriven_examples())}")
    if emails:
        lines.append(
            f"{emails} approver e-mail(s) not sent: examples/executor.yaml has no email channel"
        )
    return lines


def check(
    outcomes: list[Outcome],
    streams: dict[str, list[Envelope]],
    notification_dirs: list[Path],
    processes: dict[str, int | None],
    stopped: set[str],
) -> list[str]:
    problems = []
    for outcome in outcomes:
        if outcome.status != "EXECUTION_STATUS_COMPLETED":
            problems.append(f"{outcome.example} {outcome.execution_id}: {outcome.status}")
        scenario = SCENARIOS.get(outcome.example)
        for step in scenario.completed_steps if scenario else ():
            if outcome.steps.get(step) != "STEP_STATUS_COMPLETED":
                problems.append(
                    f"{outcome.example} {outcome.execution_id}: step {step} is {outcome.steps.get(step)}"
                )
        if outcome.phase == 2 and outcome.executors != [SECOND_EXECUTOR_ID]:
            problems.append(
                f"{outcome.example} {outcome.execution_id}: phase-2 work ran on {outcome.executors}"
            )
    for stream, envelopes in streams.items():
        for message_id, count in Counter(e.id for e in envelopes).items():
            if count > 1:
                problems.append(f"{stream}: message {message_id} stored {count} times")
    execution_facts = streams[facts_stream("execution")]
    completed = Counter(e.subject for e in execution_facts if e.type.endswith(".ProcessCompleted"))
    for outcome in outcomes:
        if completed[outcome.execution_id] != 1:
            problems.append(
                f"{outcome.execution_id}: {completed[outcome.execution_id]} ProcessCompleted facts"
            )
    work_facts = streams[facts_stream("work")]
    requested = {e.subject for e in work_facts if e.type.endswith(".WorkRequested")}
    ended = Counter(e.subject for e in work_facts if e.type.rsplit(".", 1)[1] in WORK_ENDED)
    for work_id in requested:
        if ended[work_id] != 1:
            problems.append(f"work {work_id}: {ended[work_id]} end facts")
    for envelope in work_facts:
        if envelope.type.endswith(".WorkFailed"):
            failed = decode(envelope)
            # Approvers are also told by e-mail; the examples' executor has no e-mail channel.
            if failed.error.code != "CHANNEL_NOT_CONFIGURED" or failed.correlation.execution_id:
                problems.append(f"work {failed.work_id} failed: {failed.error.code}")
    expected: Counter[str] = Counter()
    for outcome in outcomes:
        scenario = SCENARIOS.get(outcome.example)
        for target, count in (scenario.notifications if scenario else {}).items():
            expected[target] += count
    written: Counter[str] = Counter()
    for folder in notification_dirs:
        for path in folder.glob("*.jsonl"):
            written[path.name] += len(path.read_text().splitlines())
    if written != expected:
        problems.append(f"file notifications: expected {dict(expected)}, written {dict(written)}")
    for name, code in processes.items():
        if code is not None and name not in stopped:
            problems.append(f"process {name} exited with {code}")
    return problems


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


async def run_examples(
    cluster: Cluster, runs: int, wait_seconds: float, progress: Progress = _quiet
) -> tuple[list[Outcome], set[str], Failover]:
    files = example_files()
    clients = Clients(cluster)
    try:
        await publish(clients, files)
        progress(
            f"published {len(files)} examples; running each {runs} times at once over both replicas"
        )
        # Phase 1: every example `runs` times at once, spread over both replicas.
        first = [
            drive(clients, example, 1, wait_seconds=wait_seconds)
            for example in files
            for _ in range(runs)
        ]
        outcomes = list(await asyncio.gather(*first))
        # Phase 2: the first replica of every service dies, the first executor stops;
        # nothing is restarted.
        progress(
            f"{len(outcomes)} executions finished; killing the first replica of every "
            "service and stopping the first executor"
        )
        cluster.suite.stop("executor-0")
        for service in SERVICES:
            cluster.suite.kill(service)
        failover = await fail_over(clients)
        progress(f"running each example once more on what is left ({len(files)} executions)")
        second = [drive(clients, example, 2, wait_seconds=wait_seconds) for example in files]
        outcomes += await asyncio.gather(*second)
        return outcomes, {*SERVICES, "executor-0"}, failover
    finally:
        await clients.close()


def _probe(clients: Clients, service: str) -> Any:
    """A cheap read of ``service``."""
    if service == "definition":
        return clients.definitions.ListDefinitions(
            definition_service_pb2.ListDefinitionsRequest(page_size=1), timeout=2
        )
    if service == "execution":
        return clients.executions.ListExecutions(
            execution_service_pb2.ListExecutionsRequest(page_size=1), timeout=2
        )
    if service == "approval":
        return clients.approvals.ListApprovals(
            approval_service_pb2.ListApprovalsRequest(page_size=1), timeout=2
        )
    return clients.work.ListWork(work_service_pb2.ListWorkRequest(page_size=1), timeout=2)


async def fail_over(clients: Clients, give_up: float = 30.0) -> Failover:
    """Call every service until it answers (any status but UNAVAILABLE or
    DEADLINE_EXCEEDED: a replica answered); how long that took after the kill."""
    started = time.monotonic()
    failed = 0

    async def until_answered(service: str) -> float:
        nonlocal failed
        while time.monotonic() - started < give_up:
            try:
                await _probe(clients, service)
                return round(time.monotonic() - started, 3)
            except grpc.aio.AioRpcError as error:
                transport = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if error.code() not in transport:
                    return round(time.monotonic() - started, 3)
                failed += 1
                await asyncio.sleep(0.01)
        return float("inf")

    seconds = await asyncio.gather(*(until_answered(s) for s in SERVICES))
    return Failover(dict(zip(SERVICES, seconds, strict=True)), failed)


def execute(
    data_dir: Path,
    admin_url: str,
    runs: int = 2,
    keep: bool = False,
    timeout: float = 120.0,
    progress: Progress = _quiet,
) -> Report:
    started = time.monotonic()
    cluster = Cluster(data_dir, admin_url, keep=keep)
    try:
        progress(
            f"starting NATS and {REPLICAS} replicas of each service on PostgreSQL "
            f"(logs in {cluster.suite.data_dir / 'logs'})"
        )
        cluster.start()
        progress(f"all {REPLICAS * len(SERVICES)} service processes are SERVING")
        outcomes, stopped, failover = asyncio.run(run_examples(cluster, runs, timeout, progress))
        progress("reading the facts streams and checking every execution")
        streams = asyncio.run(read_facts(cluster.nats.url, cluster.subscriber))
        processes = cluster.processes()
        problems = check(
            outcomes,
            streams,
            [cluster.suite.data_dir / "notifications", cluster.second.data_dir / "notifications"],
            processes,
            stopped,
        )
        problems += [
            f"{service} did not answer through its second replica within 30 s"
            for service, seconds in failover.seconds.items()
            if seconds == float("inf")
        ]
        return Report(
            databases={s: db.name for s, db in cluster.databases.items()},
            nats_url=cluster.nats.url,
            processes={name: len(names) for name, names in cluster.replica_names.items()}
            | {"executor": 2},
            outcomes=outcomes,
            problems=problems,
            notes=notes(streams),
            seconds=round(time.monotonic() - started, 1),
            failover=failover,
        )
    finally:
        progress("stopping every process" + ("" if keep else " and dropping the databases"))
        cluster.stop()


def postgres_reachable(admin_url: str) -> str | None:
    """None when it answers, else why not."""

    async def ping() -> None:
        import asyncpg

        conn = await asyncpg.connect(
            admin_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5
        )
        await conn.close()

    try:
        asyncio.run(ping())
    except Exception as error:
        return repr(error)
    return None


@contextmanager
def data_folder(path: str | None) -> Iterator[Path]:
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="trinity-replicas-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TRINITY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES,
        help="an administrative URL of the PostgreSQL server (its databases are created beside it)",
    )
    parser.add_argument("--runs", type=int, default=2, help="concurrent executions of each example")
    parser.add_argument(
        "--data-dir", help="folder for NATS, logs and notifications (default: temporary)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one execution may take"
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)

    why = postgres_reachable(args.postgres)
    if why is not None:
        print(f"PostgreSQL at {args.postgres} is not reachable: {why}", file=sys.stderr)
        return 2
    began = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - began:5.1f}s] {line}", file=sys.stderr, flush=True)

    with data_folder(args.data_dir) as data_dir:
        report = execute(
            data_dir,
            args.postgres,
            runs=args.runs,
            keep=args.keep,
            timeout=args.timeout,
            progress=progress,
        )
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=2))
        print(
            f"{sum(report.processes.values())} processes: {report.processes}; NATS {report.nats_url}"
        )
        print(f"databases: {', '.join(report.databases.values())}{' (kept)' if args.keep else ''}")
        for o in report.outcomes:
            print(
                f"  phase {o.phase}  {o.example:<16} {o.status:<28} {o.seconds:6.1f}s  "
                f"{o.decisions} decisions  executors {', '.join(o.executors) or '-'}"
            )
        if report.failover is not None:
            print(
                "first replicas killed; answered through the second after "
                + ", ".join(f"{s} {t:.3f}s" for s, t in report.failover.seconds.items())
                + f" ({report.failover.failed_calls} calls failed meanwhile)"
            )
        for note in report.notes:
            print(note)
        if report.problems:
            print("PROBLEMS:", *report.problems, sep="\n  ")
            if args.data_dir:
                print(f"logs in {data_dir}/suite/logs")
        else:
            print(f"all {len(report.outcomes)} executions completed; facts and effects once each")
        print(f"{report.seconds}s")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
