"""The executor process: takes intents from the work queue, runs them, reports through gRPC.

Per intent (up to ``concurrency`` fetched per kind): take a slot (bounded concurrency) →
run the job. A job that completes within the first heartbeat interval is reported in
one call, ``RecordWorkCompleted`` with its start; otherwise, then, ``RecordWorkStarted``
(the lease) → heartbeats → ``RecordWorkCompleted`` / ``RecordWorkFailed``. The intent
is acknowledged once the work service knows the work is taken (its start or its result
recorded): a crash before leaves it to be redelivered. Reports are retried with the
same request id until recorded or the lease is certainly lost (a finished agent run is never thrown away for a transient error:
that would run the agent again once the lease expired). The heartbeat answer tells
a job to stop (cancelled, or the lease was lost); heartbeats go on while a result
is being reported. Graceful stop: fetch nothing new, let running jobs finish for
``shutdown_grace``, then release what is left so another executor takes it at once.

Executors never publish to NATS: they only fetch and acknowledge intents.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field

import grpc
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from trinity.process.work.v1 import intents_pb2, work_pb2
from trinity_platform import metrics
from trinity_platform.channels import open_channel
from trinity_platform.consumer import Ack, Nak, Outcome, PullConsumerRunner, Term
from trinity_platform.envelope import Envelope
from trinity_platform.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TrinityError,
    Unauthenticated,
)
from trinity_platform.logs import get_logger
from trinity_platform.nats_connect import NatsSecurity, connect_nats
from trinity_platform.startup import StartupPhases
from trinity_platform.subjects import WORK_QUEUE_STREAM, work_queue_subject
from trinity_platform.telemetry import span
from trinity_platform.tls import ClientTls
from trinity_work import codec as pb
from trinity_work.domain.model import (
    AgentTask,
    Failure,
    FailureCode,
    Payload,
    ToolRun,
    WorkResult,
)
from trinity_work.executor.agents.gateway import AgentGateway
from trinity_work.executor.client import WorkClient
from trinity_work.executor.config import ExecutorConfig
from trinity_work.executor.jobs import Job, JobFailed
from trinity_work.executor.notify import Notifier
from trinity_work.executor.results import finalize
from trinity_work.executor.tools import ToolRunner

_log = get_logger(__name__)

INTENT_TYPE = intents_pb2.WorkExecutionRequested.DESCRIPTOR.full_name
# Answers to RecordWorkStarted after which the intent is obsolete: drop it.
_OBSOLETE = {"WORK_FINISHED", "STALE_DELIVERY", "WORK_LEASED_ELSEWHERE", "WORK_NOT_FOUND"}


def durable_name(kind: str) -> str:
    """All executors serving one kind share one durable consumer (a work-queue stream
    allows one consumer per subject)."""
    return f"work-executor-{kind}"


@dataclass
class RunningJob:
    job: Job
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    # What becomes of the intent: Ack once the work service knows the work is taken.
    taken: asyncio.Future[Outcome] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, outcome: Outcome) -> None:
        if not self.taken.done():
            self.taken.set_result(outcome)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stopped.set()


class Executor:
    def __init__(
        self,
        config: ExecutorConfig,
        *,
        target: str,
        nats_url: str,
        token: str | None = None,
        tls: ClientTls | None = None,
        nats_security: NatsSecurity | None = None,
        startup: StartupPhases | None = None,
    ) -> None:
        self.config = config
        self._startup = startup or StartupPhases("executor")
        self._target = target
        self._nats_url = nats_url
        self._token = token
        self._tls = tls
        self._nats_security = nats_security
        self._nc: NATS | None = None
        self._channel: grpc.aio.Channel | None = None
        self._client: WorkClient | None = None
        self._runners: list[PullConsumerRunner] = []
        self._slots = asyncio.Semaphore(config.concurrency)
        self._stopping = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self.jobs: dict[str, RunningJob] = {}
        self.agents = AgentGateway(config)
        self.tools = ToolRunner(config)
        self.notifier = Notifier(config)
        self.completed = 0
        self.failed = 0

    @property
    def client(self) -> WorkClient:
        assert self._client is not None, "start() first"
        return self._client

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        config = self.config
        self._channel = open_channel(self._target, tls=self._tls, token=self._token or None)
        self._client = WorkClient(self._channel, config.executor_id)
        self._nc = await connect_nats(
            self._nats_url,
            name=f"trinity-executor-{config.executor_id}",
            security=self._nats_security,
        )
        self._startup.mark("nats connect")
        js = self._nc.jetstream()
        for kind in config.kinds:
            runner = PullConsumerRunner(
                js,
                stream=WORK_QUEUE_STREAM,
                durable=durable_name(kind.value),
                filter_subjects=[work_queue_subject(kind.value)],
                handler=self._handle,
                # Up to `concurrency` intents at once, each waiting for a free slot: intake
                # keeps pace with the slots instead of one RecordWorkStarted round trip at a
                # time, and a busy executor still holds no more intents than it can run.
                batch=config.concurrency,
                concurrency=config.concurrency,
                ack_wait=config.ack_wait,
                fetch_timeout=config.fetch_timeout,
            )
            runner.start()
            self._runners.append(runner)
        self._startup.mark("consumers")
        _log.info(
            "executor started",
            executor_id=config.executor_id,
            kinds=[k.value for k in config.kinds],
            concurrency=config.concurrency,
        )
        self._startup.ready(executor_id=config.executor_id)

    async def stop(self) -> None:
        """Graceful: no new work; running jobs get ``shutdown_grace`` to finish, then
        the rest are stopped and released to other executors."""
        self._stopping.set()
        runners, self._runners = self._runners, []
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
        tasks = [j.task for j in self.jobs.values() if j.task is not None]
        if tasks:
            _log.info(
                "waiting for running jobs", count=len(tasks), grace=self.config.shutdown_grace
            )
            await asyncio.wait(tasks, timeout=self.config.shutdown_grace)
        for running in list(self.jobs.values()):
            running.stop("shutdown")
        rest = [j.task for j in self.jobs.values() if j.task is not None]
        if rest:
            _, unfinished = await asyncio.wait(rest, timeout=10.0)
            for task in unfinished:  # still reporting to an unreachable work service
                _log.warning("result not recorded at shutdown; its lease will expire")
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        await self.agents.close()
        await self.notifier.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 5.0)
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()
        _log.info("executor stopped", executor_id=self.config.executor_id)

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------ intake

    async def _acquire_slot(self) -> bool:
        if self._stopping.is_set():
            return False
        acquire = asyncio.ensure_future(self._slots.acquire())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not acquire.done():
            acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        if acquire.done() and not acquire.cancelled():
            if self._stopping.is_set():
                self._slots.release()
                return False
            return True
        return False

    async def _handle(self, envelope: Envelope, msg: Msg) -> Outcome:
        if envelope.type != INTENT_TYPE:
            return Term(f"not a work intent: {envelope.type}")
        try:
            intent = intents_pb2.WorkExecutionRequested.FromString(envelope.data)
            payload = pb.from_payload(intent.payload)
        except Exception as exc:
            return Term(f"undecodable intent: {exc!r}")
        ids = {"work_id": intent.work_id, "execution_id": intent.correlation.execution_id}
        if intent.correlation.step_id:
            ids["step_id"] = intent.correlation.step_id
        # The job's task copies this context: its logs carry the ids, its spans the trace.
        with structlog.contextvars.bound_contextvars(**ids):
            return await self._take(intent, payload)

    async def _take(self, intent: intents_pb2.WorkExecutionRequested, payload: Payload) -> Outcome:
        if not await self._acquire_slot():
            return Nak()
        timeout = intent.timeout.ToTimedelta().total_seconds() or 600.0
        if self.config.max_timeout is not None:
            timeout = min(timeout, self.config.max_timeout)
        job = Job(
            work_id=intent.work_id,
            kind=pb.KIND_FROM_PROTO[intent.kind],
            payload=payload,
            correlation=pb.from_step_ref(intent.correlation),
            delivery=intent.delivery,
            timeout=timeout,
        )
        running = RunningJob(job)
        self.jobs[job.work_id] = running
        running.task = asyncio.get_running_loop().create_task(
            self._run_traced(running), name=f"job-{job.work_id}"
        )
        # Unacknowledged (the consumer keeps it in progress) until the work is taken.
        return await running.taken

    def _refused(self, running: RunningJob, exc: TrinityError, what: str) -> None:
        """Settles the intent after the work service refused to record ``what``."""
        work_id = running.job.work_id
        if exc.reason in _OBSOLETE or isinstance(exc, NotFound):
            _log.info("dropping obsolete intent", work_id=work_id, reason=exc.reason)
            running.settle(Ack())
        elif isinstance(exc, PermissionDenied | Unauthenticated):
            # Misconfigured identity: the work stays for an executor the service accepts.
            _log.error(
                "the work service refuses this executor's identity: its token "
                "(TRINITY_EXECUTOR_TOKEN) must hold the executor role and its id "
                "(TRINITY_EXECUTOR_ID) must be the token's principal or <principal>/<name>",
                work_id=work_id,
                executor_id=self.config.executor_id,
                reason=exc.reason,
            )
            running.settle(Nak(delay=5.0))
        else:
            _log.warning(f"could not record {what}", work_id=work_id, error=repr(exc))
            running.settle(Nak(delay=1.0))

    async def _record_start(self, running: RunningJob) -> bool:
        """``RecordWorkStarted`` (the lease) and the intent settled; False: drop the job."""
        job = running.job
        try:
            work = await self.client.started(job.work_id, job.delivery, self.config.lease)
        except TrinityError as exc:
            self._refused(running, exc, "the start")
            return False
        running.settle(Ack())
        if (work.status, work.executor_id, work.delivery) != (
            work_pb2.WORK_STATUS_STARTED,
            self.config.executor_id,
            job.delivery,
        ):  # a retried start answered from its key after the work moved on
            _log.info("work moved on; dropping intent", work_id=job.work_id)
            return False
        return True

    async def _report_at_once(self, running: RunningJob, work: asyncio.Future[WorkResult]) -> bool:
        """A result that came within the first heartbeat interval, recorded with its start
        in one call. False when it must go the long way, start first, then ``_report``: the
        job raised, the result is refused as it is, or the call did not get through within
        a lease (then the result waits for the work service as any other)."""
        if work.cancelled() or work.exception() is not None:
            return False
        job = running.job
        try:
            await self.client.completed(
                job.work_id, job.delivery, work.result(), start=True, retry_for=self.config.lease
            )
        except TrinityError as exc:
            refused = exc.reason in _OBSOLETE or isinstance(
                exc, NotFound | PermissionDenied | Unauthenticated
            )
            if not refused:
                return False
            self._refused(running, exc, "the result")
            return True
        running.settle(Ack())
        self.completed += 1
        metrics.EXECUTOR_JOBS.labels(job.kind.value, "completed").inc()
        return True

    # ------------------------------------------------------------------ running

    async def _run_traced(self, running: RunningJob) -> None:
        with span(f"execute {running.job.kind.value}", attributes={"work_id": running.job.work_id}):
            await self._run(running)
            _log.debug("job ended", kind=running.job.kind.value, stop=running.stop_reason)

    async def _run(self, running: RunningJob) -> None:
        job = running.job
        log = _log.bind(work_id=job.work_id, delivery=job.delivery)
        work = asyncio.ensure_future(self._execute(job))
        stopped = asyncio.ensure_future(running.stopped.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        beats: asyncio.Future[None] | None = None
        began = time.perf_counter()
        metrics.EXECUTOR_RUNNING.inc()
        try:
            # Most work ends within the first heartbeat interval: one call records it.
            done, _ = await asyncio.wait(
                {work, stopped, stopping},
                timeout=min(self.config.heartbeat_interval, job.timeout),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if work in done and await self._report_at_once(running, work):
                return
            if not await self._record_start(running):
                return
            beats = asyncio.ensure_future(self._heartbeats(running))
            if work not in done:
                left = job.timeout - (time.perf_counter() - began)
                done, _ = await asyncio.wait(
                    {work, stopped}, timeout=max(left, 0.0), return_when=asyncio.FIRST_COMPLETED
                )
            if work in done:
                await self._report(job, work)
                return
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            if running.stop_reason is None:
                log.info("job timed out", timeout=job.timeout)
                await self._report_failure(
                    job,
                    Failure(
                        FailureCode.TIMEOUT.value,
                        f"the work did not finish within its timeout of {job.timeout:g}s",
                        {"timeout_seconds": f"{job.timeout:g}"},
                    ),
                )
            elif running.stop_reason == "shutdown":
                await self._give_back(job)
            else:
                log.info("job stopped", reason=running.stop_reason)
        except Exception:
            log.exception("job runner failed")
        finally:
            running.settle(Nak())  # nothing recorded: the intent is offered again
            waiting = [t for t in (beats, stopped, stopping) if t is not None]
            for task in (*waiting, work):
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            self.jobs.pop(job.work_id, None)
            self._slots.release()
            metrics.EXECUTOR_RUNNING.dec()
            metrics.EXECUTOR_JOB_SECONDS.labels(job.kind.value).observe(time.perf_counter() - began)

    async def _execute(self, job: Job) -> WorkResult:
        payload = job.payload
        if isinstance(payload, AgentTask):
            result = await self.agents.execute_task(payload, job)
        elif isinstance(payload, ToolRun):
            result = await self.tools.run(payload, job)
        else:
            result = await self.notifier.send(payload, job)
        return finalize(
            result, job.work_id, self.config.result_inline_limit, self.config.evidence_dir
        )

    async def _heartbeats(self, running: RunningJob) -> None:
        job = running.job
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                reply = await self.client.heartbeat(job.work_id, self.config.lease)
            except TrinityError as exc:
                if exc.reason in ("WORK_NOT_LEASED", "WORK_NOT_FOUND", "WORK_FINISHED"):
                    running.stop("lease lost")
                    return
                _log.warning("heartbeat failed", work_id=job.work_id, error=repr(exc))
                continue
            if reply.cancel_requested:
                running.stop("cancelled")
                return

    async def _report(self, job: Job, work: asyncio.Future[WorkResult]) -> None:
        try:
            result = work.result()
        except JobFailed as failed:
            await self._report_failure(job, failed.failure())
            return
        except Exception as exc:
            _log.exception("job raised", work_id=job.work_id)
            await self._report_failure(
                job, Failure(FailureCode.EXECUTOR_ERROR.value, f"{type(exc).__name__}: {exc}")
            )
            return
        try:
            await self.client.completed(job.work_id, job.delivery, result)
            self.completed += 1
            metrics.EXECUTOR_JOBS.labels(job.kind.value, "completed").inc()
        except InvalidArgument as exc:
            # The result itself is refused (NUL in text, NaN, nesting too deep): reported as
            # a failure, or the work would be redelivered and refused forever.
            _log.warning("result refused; reporting a failure", work_id=job.work_id)
            problems = "; ".join(f"{v.field}: {v.description}" for v in exc.violations[:5])
            await self._report_failure(
                job,
                Failure(
                    FailureCode.EXECUTOR_ERROR.value,
                    f"the work service refused the result ({problems or exc.message})",
                ),
            )
        except TrinityError as exc:
            _log.warning("completion not recorded", work_id=job.work_id, reason=exc.reason)

    async def _report_failure(self, job: Job, failure: Failure) -> None:
        try:
            await self.client.failed(job.work_id, job.delivery, failure)
            self.failed += 1
            metrics.EXECUTOR_JOBS.labels(job.kind.value, "failed").inc()
        except TrinityError as exc:
            _log.warning("failure not recorded", work_id=job.work_id, reason=exc.reason)

    async def _give_back(self, job: Job) -> None:
        try:
            await self.client.heartbeat(job.work_id, self.config.lease, release=True)
            _log.info("released work at shutdown", work_id=job.work_id)
        except TrinityError as exc:
            _log.info(
                "could not release work; its lease will expire",
                work_id=job.work_id,
                reason=exc.reason,
            )
