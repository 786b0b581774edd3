"""Prometheus metrics of every service and executor, and the /metrics endpoint.

The metrics live in the process's default registry (one service or executor per
process). Recording one is a lock and an addition, so hooks stay on whenever the
code runs; only the HTTP endpoint and the sampled gauges (periodic ``COUNT``
queries) need ``TRINITY_<SERVICE>_METRICS_LISTEN`` / ``TRINITY_EXECUTOR_METRICS_LISTEN``.

Names follow the Prometheus conventions: ``trinity_`` prefix, ``_total`` for
counters, base units (``_seconds``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from trinity_platform.logs import get_logger

_log = get_logger(__name__)

# Latencies from sub-millisecond RPCs to hour-long steps.
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The outbox lag has a target (p99 <= 20 ms, issue 14): finer buckets around it, the
# _FAST ones kept so existing queries still find their bounds.
_LAG = tuple(sorted({*_FAST, 0.0075, 0.0125, 0.015, 0.0175, 0.02, 0.03, 0.04}))
_SLOW = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0)

# ----------------------------------------------------------------- shared (platform)

GRPC_HANDLED = Counter(
    "trinity_grpc_server_handled_total",
    "gRPC calls handled, by method and status code",
    ["method", "code"],
)
GRPC_SECONDS = Histogram(
    "trinity_grpc_server_handling_seconds",
    "Time to handle a gRPC call (streams: until the stream ends)",
    ["method"],
    buckets=_FAST,
)
DB_TRANSACTIONS = Counter(
    "trinity_db_transactions_total", "Database transactions, by outcome", ["outcome"]
)
DB_STATEMENTS = Counter(
    "trinity_db_statements_total",
    "SQL statements sent to the database (each executemany counts once; BEGIN/COMMIT not)",
)
DB_CONFLICTS = Counter(
    "trinity_db_conflicts_total",
    "Concurrent-write conflicts (optimistic concurrency, unique keys); the write is retried",
    ["aggregate"],
)
OUTBOX_PUBLISHED = Counter(
    "trinity_outbox_published_total", "Outbox messages acknowledged by JetStream"
)
OUTBOX_FAILED_BATCHES = Counter(
    "trinity_outbox_failed_batches_total", "Relay batches that stopped early (kept and retried)"
)
OUTBOX_BACKLOG = Gauge("trinity_outbox_backlog", "Outbox messages not yet published (sampled)")
OUTBOX_LAG = Histogram(
    "trinity_outbox_publish_lag_seconds",
    "From the commit of an outbox row to JetStream's acknowledgement",
    buckets=_LAG,
)
CONSUMER_MESSAGES = Counter(
    "trinity_consumer_messages_total",
    "Messages handled by a durable consumer, by outcome",
    ["consumer", "outcome"],
)
CONSUMER_REDELIVERIES = Counter(
    "trinity_consumer_redeliveries_total",
    "Messages delivered more than once to a durable consumer",
    ["consumer"],
)
CONSUMER_LAG = Histogram(
    "trinity_consumer_lag_seconds",
    "From a message's ce-time to the moment its consumer handled it",
    ["consumer"],
    buckets=_FAST,
)
CONSUMER_PENDING = Gauge(
    "trinity_consumer_pending_messages",
    "Messages still waiting in the stream for this consumer (from the last delivery)",
    ["consumer"],
)
DISPATCH_BACKLOG = Gauge(
    "trinity_dispatch_backlog", "Outgoing commands waiting to be sent (sampled)", ["kind"]
)
DISPATCH_SENT = Counter(
    "trinity_dispatch_total",
    "Outgoing commands, by kind and outcome (sent, retry, rejected)",
    ["kind", "outcome"],
)

# ----------------------------------------------------------------- service-specific

EXECUTIONS = Gauge("trinity_executions", "Executions by status (sampled)", ["status"])
EXECUTIONS_FINISHED = Counter(
    "trinity_executions_finished_total", "Executions that ended, by status", ["status"]
)
EXECUTIONS_STARTED = Counter("trinity_executions_started_total", "Executions started")
STEPS_STARTED = Counter("trinity_steps_started_total", "Steps started, by kind", ["kind"])
STEPS_COMPLETED = Counter("trinity_steps_completed_total", "Steps completed, by kind", ["kind"])
STEPS_FAILED = Counter(
    "trinity_steps_failed_total", "Step attempts failed, by kind (retried or not)", ["kind"]
)
STEP_SECONDS = Histogram(
    "trinity_step_duration_seconds", "Duration of completed steps", ["kind"], buckets=_SLOW
)
BUDGET_WARNINGS = Counter("trinity_budget_warnings_total", "Budget warnings raised")
BUDGET_EXCEEDED = Counter("trinity_budget_exceeded_total", "Budgets exceeded")
TIMERS_DUE = Gauge("trinity_timers_due", "Pending timers whose fire time has passed (sampled)")
TIMER_LATENESS = Histogram("trinity_timer_lateness_seconds", "How late timers fired", buckets=_FAST)
WORK_QUEUE_WAIT = Histogram(
    "trinity_work_queue_wait_seconds",
    "From a work request to the start of its execution by an executor",
    ["kind"],
    buckets=_SLOW,
)
WORK_FINISHED = Counter(
    "trinity_work_finished_total", "Work requests finished, by kind and status", ["kind", "status"]
)
APPROVALS_PENDING = Gauge("trinity_approvals_pending", "Approvals waiting for a decision (sampled)")
EXECUTOR_JOBS = Counter(
    "trinity_executor_jobs_total",
    "Jobs run by this executor, by kind and outcome",
    ["kind", "outcome"],
)
EXECUTOR_JOB_SECONDS = Histogram(
    "trinity_executor_job_seconds", "Time an executor spent on a job", ["kind"], buckets=_SLOW
)
EXECUTOR_RUNNING = Gauge("trinity_executor_running_jobs", "Jobs this executor is running")

# ----------------------------------------------------------------- the endpoint


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (or ``:port``) → (host, port); raises ValueError with the setting's form."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a metrics address must look like 'host:port', got {listen!r}")
    return host or "0.0.0.0", int(port)


class MetricsEndpoint:
    """``GET /metrics`` on ``listen`` from a daemon thread (prometheus-client's server)."""

    def __init__(self, listen: str) -> None:
        self.host, self.port = parse_listen(listen)
        self._server: Any = None

    def start(self) -> None:
        self._server, _thread = start_http_server(self.port, addr=self.host)
        self.port = self._server.server_port
        _log.info("metrics endpoint", url=f"http://{self.host}:{self.port}/metrics")

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()


Sample = Callable[[], Awaitable[None]]


async def sample_forever(samples: list[Sample], interval: float) -> None:
    """Run each sampler (a query that sets gauges) every ``interval`` seconds."""
    while True:
        for sample in samples:
            try:
                await sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sampled gauge must never stop the service
                _log.debug("metrics sample failed", error=repr(exc))
        await asyncio.sleep(interval)


def instrument_engine(engine: Any) -> None:
    """Count the statements, commits and rollbacks of an SQLAlchemy engine (sync or async)."""
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)
    commits = DB_TRANSACTIONS.labels("commit")
    rollbacks = DB_TRANSACTIONS.labels("rollback")
    event.listen(sync_engine, "commit", lambda _conn: commits.inc())
    event.listen(sync_engine, "rollback", lambda _conn: rollbacks.inc())
    statements = DB_STATEMENTS
    event.listen(sync_engine, "before_cursor_execute", lambda *_args: statements.inc())
