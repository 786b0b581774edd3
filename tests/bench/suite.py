"""The whole suite for the end-to-end groups: real subprocesses through :class:`LocalSuite`.

Each group starts its own suite (a private nats-server, the four services, one
executor) on free loopback ports and a temporary data folder, on SQLite or on four
fresh PostgreSQL databases, and removes everything afterwards.

Completion is observed the way any subscriber would: a plain NATS subscription on
the execution facts (``ProcessCompleted`` / ``ProcessFailed`` / ``ProcessCancelled``
and ``StepCompleted``), so measuring adds no polling load to the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from trinity.process.common.v1.enums_pb2 import TimeoutAction
from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity_platform.envelope import H_SUBJECT
from trinity_platform.subjects import all_facts_subject
from trinity_platform.testing import free_port

from .core import Bench, Skip, percentile
from .infra import connect_nats, postgres_unreachable, private_nats, temporary_postgres
from .lag import Buckets, difference, lag_values, scrape_lag

TERMINAL_FACTS = ("ProcessCompleted", "ProcessFailed", "ProcessCancelled")
RETRYABLE = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNAVAILABLE,
)
LOG_LEVEL_ENV = "TRINITY_BENCH_LOG_LEVEL"
STOP_TIMEOUT = 3.0


def _services() -> tuple[str, ...]:
    from trinity_cli.local_suite import SERVICES

    return SERVICES


# --------------------------------------------------------------------------- facts


@dataclass
class Tracker:
    """Follows the execution facts: when each execution finished, how many steps completed."""

    steps_completed: int = 0
    facts: Counter[str] = field(default_factory=Counter)
    _finished: dict[str, tuple[str, float]] = field(default_factory=dict)
    _waiters: dict[str, asyncio.Future[tuple[str, float]]] = field(default_factory=dict)

    async def on_message(self, msg: Msg) -> None:
        now = time.perf_counter()
        name = msg.subject.rsplit(".", 1)[-1]
        self.facts[name] += 1
        if name == "StepCompleted":
            self.steps_completed += 1
        elif name in TERMINAL_FACTS:
            execution_id = (msg.headers or {}).get(H_SUBJECT, "")
            waiter = self._waiters.pop(execution_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((name, now))
            else:
                self._finished[execution_id] = (name, now)

    def expect(self, execution_id: str) -> asyncio.Future[tuple[str, float]]:
        """Resolves to (terminal fact name, perf_counter time it arrived)."""
        future: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        early = self._finished.pop(execution_id, None)
        if early is not None:
            future.set_result(early)
        else:
            self._waiters[execution_id] = future
        return future

    def ended(self, execution_id: str) -> str | None:
        """The terminal fact of an execution nobody awaited (None: not seen)."""
        found = self._finished.get(execution_id)
        return found[0] if found else None

    def forget(self, execution_id: str) -> None:
        self._waiters.pop(execution_id, None)


# --------------------------------------------------------------------------- processes


def agent_chain(name: str, steps: int) -> definition_pb2.ProcessSpec:
    """``steps`` echo-agent steps, each depending on the one before."""
    return definition_pb2.ProcessSpec(
        name=name,
        description=f"benchmark: {steps} echo steps in sequence",
        steps=[
            definition_pb2.Step(
                id=f"s{index}",
                name=f"Step {index}",
                depends_on=[f"s{index - 1}"] if index else [],
                agent_task=definition_pb2.AgentTask(agent="echo", message=f"step {index}"),
            )
            for index in range(steps)
        ],
    )


def parked(name: str) -> definition_pb2.ProcessSpec:
    """One timer step of an hour: an execution that stays active, costing nothing meanwhile."""
    return definition_pb2.ProcessSpec(
        name=name,
        description="benchmark: waits an hour",
        steps=[
            definition_pb2.Step(
                id="wait", name="Wait", timer=definition_pb2.Timer(duration=Duration(seconds=3600))
            )
        ],
    )


def parked_on_approval(name: str) -> definition_pb2.ProcessSpec:
    """One human approval nobody decides within the hour: active, an approval pending."""
    return definition_pb2.ProcessSpec(
        name=name,
        description="benchmark: waits for an approval nobody gives",
        steps=[
            definition_pb2.Step(
                id="review",
                name="Review",
                timeout=Duration(seconds=3600),
                human_approval=definition_pb2.HumanApproval(
                    approvers=["nobody@bench"], on_timeout=TimeoutAction.TIMEOUT_ACTION_REJECT
                ),
            )
        ],
    )


def parked_on_message(name: str) -> definition_pb2.ProcessSpec:
    """One wait for a message that never comes (its own correlation key, no timeout)."""
    return definition_pb2.ProcessSpec(
        name=name,
        description="benchmark: waits for a message nobody sends",
        steps=[
            definition_pb2.Step(
                id="wait",
                name="Wait",
                wait_for_message=definition_pb2.WaitForMessage(
                    message="bench.never", correlation_key="{{ execution.id }}"
                ),
            )
        ],
    )


def new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- suite

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its waited-for children (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the command name (which may hold spaces): utime is the 14th field.
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime + cutime + cstime) / _CLOCK_TICKS


@dataclass
class RunningSuite:
    kind: str
    nats_url: str
    definitions: DefinitionServiceStub
    executions: ExecutionServiceStub
    tracker: Tracker
    log_tail: Callable[..., str]
    pids: dict[str, int] = field(default_factory=dict)  # process name -> pid (profiling, CPU)
    local: Any = None  # the LocalSuite (to start replicas)
    metrics_ports: dict[str, int] = field(default_factory=dict)  # service -> /metrics port

    async def fact_lag(self) -> Buckets:
        """The outbox relays' lag histogram (commit → JetStream ack), summed over services."""
        return await scrape_lag(self.metrics_ports)

    def cpu_seconds(self) -> float:
        """CPU time used so far by every process of the suite (services, executor, NATS)."""
        return sum(process_cpu_seconds(pid) for pid in self.pids.values())

    def last_error(self, name: str) -> str:
        """The last log line of process ``name`` that mentions an error."""
        tail = self.log_tail(name, 200)
        lines = [line for line in tail.splitlines() if "error" in line.lower()]
        return lines[-1][:400] if lines else "none"

    async def publish(self, spec: definition_pb2.ProcessSpec) -> str:
        """Create and publish ``spec``; returns the published version."""
        try:
            draft = await self.definitions.CreateDraft(
                definition_service_pb2.CreateDraftRequest(request_id=new_id(), spec=spec),
                timeout=30,
            )
            published = await self.definitions.PublishDefinition(
                definition_service_pb2.PublishDefinitionRequest(
                    request_id=new_id(), definition_id=draft.definition.id
                ),
                timeout=30,
            )
        except grpc.aio.AioRpcError as exc:
            raise Skip(
                f"publishing {spec.name!r} failed: {exc.code().name}: {exc.details()}"
            ) from None
        return str(published.definition.version)

    async def trigger(self, process_name: str, *, retry_for: float = 0.0) -> str:
        """TriggerProcess; returns the execution id. Retries NOT_FOUND / FAILED_PRECONDITION /
        UNAVAILABLE for ``retry_for`` seconds (a definition published a moment ago)."""
        deadline = time.monotonic() + retry_for
        request = execution_service_pb2.TriggerProcessRequest(
            request_id=new_id(), process_name=process_name, triggered_by="bench"
        )
        while True:
            try:
                reply = await self.executions.TriggerProcess(request, timeout=30)
                return str(reply.execution.id)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)

    async def status(self, execution_id: str) -> execution_pb2.Execution:
        reply = await self.executions.GetExecution(
            execution_service_pb2.GetExecutionRequest(execution_id=execution_id), timeout=30
        )
        return reply.execution

    async def run_one(self, process_name: str, timeout: float) -> tuple[str, float]:
        """Trigger and wait for the end; (terminal fact, seconds). TimeoutError after ``timeout``."""
        started = time.perf_counter()
        execution_id = await self.trigger(process_name, retry_for=15)
        done = self.tracker.expect(execution_id)
        try:
            fact, finished = await asyncio.wait_for(done, timeout)
        except TimeoutError:
            self.tracker.forget(execution_id)
            execution = await self.status(execution_id)
            raise TimeoutError(
                f"execution {execution_id} not finished after {timeout:.0f}s: "
                f"{execution_pb2.ExecutionStatus.Name(execution.status)}, "
                f"{execution.progress.finished}/{execution.progress.total} steps"
            ) from None
        return fact, finished - started

    async def check_runs(self, process_name: str, timeout: float = 60.0) -> None:
        """One execution must complete, or the group is skipped with what happened."""
        try:
            fact, _ = await self.run_one(process_name, timeout)
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            raise Skip(
                f"{self.kind}: a {process_name!r} execution did not complete: {_short(exc)}"
            ) from None
        if fact != "ProcessCompleted":
            raise Skip(f"{self.kind}: a {process_name!r} execution ended with {fact}")


def _short(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else "(empty log)")[:300]


@asynccontextmanager
async def running_suite(bench: Bench, kind: str) -> AsyncIterator[RunningSuite]:
    """The suite on ``kind`` ("sqlite" or "postgres"); :class:`Skip` when it cannot run.

    When the run shares resources (``bench.shared``), the first group starts the suite
    and the later ones reuse it; it stops at the end of the run.
    """
    if bench.shared is None or bench.shared_stack is None:
        async with AsyncExitStack() as stack:
            yield await start_suite(bench, kind, stack)
        return
    key = f"suite-{kind}"
    cached = bench.shared.get(key)
    if isinstance(cached, Skip):
        raise cached
    if cached is None:
        try:
            cached = await start_suite(bench, kind, bench.shared_stack)
        except Skip as skip:
            bench.shared[key] = skip
            raise
        bench.shared[key] = cached
        bench.note(f"quick mode: this {kind} suite is shared with the groups after this one")
    else:
        bench.note(f"quick mode: reusing the {kind} suite of an earlier group")
    yield cached


async def start_suite(
    bench: Bench, kind: str, stack: AsyncExitStack, env: dict[str, str] | None = None
) -> RunningSuite:
    """Start everything (``env``: settings of the suite's processes) and register its
    teardown on ``stack``."""
    try:
        from trinity_cli.local_suite import LocalSuite
    except ImportError as exc:
        raise Skip(f"trinity_cli.local_suite is not importable: {exc}") from None
    services = _services()
    async with AsyncExitStack() as local:
        server = await local.enter_async_context(private_nats(bench.workdir))
        urls: dict[str, str] = {}
        if kind == "postgres":
            reason = await postgres_unreachable(bench.postgres_url)
            if reason:
                raise Skip(reason)
            for service in services:
                urls[service] = await local.enter_async_context(
                    temporary_postgres(bench.postgres_url, prefix=f"trinity_bench_{service}")
                )
        # Throughput groups park up to 10,000 executions: no admission bound unless a
        # group asks for one (the admission group does).
        extra_env = {"TRINITY_EXECUTION_MAX_IN_PROGRESS": "0"}
        if os.environ.get(LOG_LEVEL_ENV):
            extra_env["TRINITY_LOG_LEVEL"] = os.environ[LOG_LEVEL_ENV]
        extra_env.update(env or {})
        suite = LocalSuite(
            data_dir=bench.workdir / f"suite-{kind}-{uuid.uuid4().hex[:6]}",
            nats_url=server.url,
            ports={service: free_port() for service in services},
            database_urls=urls,
            extra_env=extra_env,
            # /metrics of each service: the fact lag is read from the relays' histogram
            metrics_ports={service: free_port() for service in services},
        )

        async def stop() -> None:
            began = time.monotonic()
            # Figures are taken; no need to wait long for a graceful stop (SIGKILL after).
            await asyncio.to_thread(suite.stop, None, STOP_TIMEOUT)
            bench.log(f"  {kind} suite stopped in {time.monotonic() - began:.1f}s")

        local.push_async_callback(stop)
        started = time.monotonic()
        await asyncio.to_thread(suite.start)
        try:
            await asyncio.to_thread(suite.wait_healthy, 90.0)
        except (RuntimeError, TimeoutError) as exc:
            first_word = str(exc).split(" ", 1)[0]
            failing = first_word if first_word in services else ""
            detail = _last_line(suite.log_tail(failing)) if failing else str(exc)[:300]
            raise Skip(f"{kind} suite not ready ({str(exc).split(':')[0]}): {detail}") from None
        bench.log(f"  {kind} suite healthy after {time.monotonic() - started:.1f}s")

        tracker = Tracker()
        nc: NATS = await connect_nats(server.url)
        local.push_async_callback(nc.close)
        await nc.subscribe(all_facts_subject("execution"), cb=tracker.on_message)
        await nc.flush()
        definition_channel = grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['definition']}")
        execution_channel = grpc.aio.insecure_channel(f"127.0.0.1:{suite.ports['execution']}")
        local.push_async_callback(definition_channel.close)
        local.push_async_callback(execution_channel.close)
        running = RunningSuite(
            kind=kind,
            nats_url=server.url,
            definitions=DefinitionServiceStub(definition_channel),
            executions=ExecutionServiceStub(execution_channel),
            tracker=tracker,
            log_tail=suite.log_tail,
            pids={
                **{name: proc.pid for name, proc in getattr(suite, "_procs", {}).items()},
                **({"nats": server.pid} if server.pid else {}),
            },
            local=suite,
            metrics_ports=dict(suite.metrics_ports),
        )
        stack.push_async_exit(local.pop_all())  # started: the caller's stack owns it now
        return running


async def for_each_database(
    bench: Bench, kinds: Sequence[str], body: Callable[[RunningSuite], Awaitable[None]]
) -> None:
    """Run ``body`` on a suite of each kind; a skip or an error stops that kind only."""
    for kind in kinds:
        suite: RunningSuite | None = None
        try:
            async with running_suite(bench, kind) as suite:
                await body(suite)
        except Skip as skip:
            bench.skip(kind, str(skip))
        except Exception as exc:
            bench.result.status = "partial"
            detail = ""
            if suite is not None:
                detail = f" (last error in the execution log: {suite.last_error('execution')})"
            bench.note(f"{kind}: failed: {_short(exc)}{detail}")


# --------------------------------------------------------------------------- load


@dataclass
class Window:
    seconds: float
    completed: int
    failed: int
    steps: int
    latencies: list[float]
    cpu_seconds: float  # summed over the suite's processes during the window
    fact_lag: Buckets = field(default_factory=dict)  # facts published during the window

    def values(self) -> dict[str, float]:
        values = {
            "executions_per_s": self.completed / self.seconds,
            "steps_per_s": self.steps / self.seconds,
            "step_cpu_ms": self.cpu_seconds * 1000 / self.steps if self.steps else 0.0,
            "latency_p50_ms": percentile(self.latencies, 50) * 1000,
            "latency_p99_ms": percentile(self.latencies, 99) * 1000,
        }
        if self.fact_lag:
            values.update(lag_values(self.fact_lag))
        return values


class ClosedLoop:
    """``concurrency`` clients, each triggering an execution and waiting for its end, again
    and again; measured in windows while it runs (sustained load)."""

    def __init__(
        self, suite: RunningSuite, process_name: str, concurrency: int, timeout: float = 60.0
    ) -> None:
        self._suite = suite
        self._process = process_name
        self._concurrency = concurrency
        self._timeout = timeout
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.finished: list[tuple[float, float, str]] = []  # (end time, latency, fact)
        self.errors: Counter[str] = Counter()

    async def _client(self) -> None:
        suite = self._suite
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                execution_id = await suite.trigger(self._process)
            except grpc.aio.AioRpcError as exc:
                self.errors[f"TriggerProcess {exc.code().name}"] += 1
                await asyncio.sleep(0.1)
                continue
            done = suite.tracker.expect(execution_id)
            try:
                fact, finished = await asyncio.wait_for(done, self._timeout)
            except TimeoutError:
                suite.tracker.forget(execution_id)
                self.errors["execution timed out"] += 1
                continue
            self.finished.append((finished, finished - started, fact))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self._concurrency)]

    async def warm_up(self, executions: int, max_seconds: float) -> None:
        """Wait until ``executions`` have finished (at most ``max_seconds``)."""
        deadline = time.perf_counter() + max_seconds
        while len(self.finished) < executions and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)

    async def window(self, seconds: float) -> Window:
        lag_before = await self._suite.fact_lag()
        steps_before = self._suite.tracker.steps_completed
        cpu_before = self._suite.cpu_seconds()
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        ended = time.perf_counter()
        cpu_used = self._suite.cpu_seconds() - cpu_before
        lag = difference(await self._suite.fact_lag(), lag_before)
        inside = [f for f in self.finished if started <= f[0] < ended]
        return Window(
            seconds=ended - started,
            completed=sum(1 for f in inside if f[2] == "ProcessCompleted"),
            failed=sum(1 for f in inside if f[2] != "ProcessCompleted"),
            steps=self._suite.tracker.steps_completed - steps_before,
            latencies=[f[1] for f in inside if f[2] == "ProcessCompleted"],
            cpu_seconds=cpu_used,
            fact_lag=lag,
        )

    async def stop(self, grace: float = 2.0) -> None:
        """Stop triggering; wait (at most ``grace`` s) for the executions in flight."""
        self._stop.set()
        _, pending = await asyncio.wait(self._tasks, timeout=grace) if self._tasks else ((), ())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
