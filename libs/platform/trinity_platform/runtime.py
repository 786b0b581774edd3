"""The start/stop sequence every service shares, so each composition root stays short.

Start: logging → database (wait until reachable, check the connection budget,
migrate) → NATS (retry until reachable; reconnects forever afterwards) → streams →
outbox relay → consumers → background tasks → gRPC (health NOT_SERVING) → SERVING.
Each phase is logged with its duration (:mod:`trinity_platform.startup`).
Stop (SIGTERM/SIGINT): NOT_SERVING → gRPC drains calls for ``stop_grace`` →
consumers finish their messages → background tasks are cancelled → the relay
flushes the outbox → NATS drains → the engine closes.

While NATS is down after start the service stays SERVING: commands still commit,
their facts wait in the outbox and the relay publishes them when NATS is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from grpc import aio
from nats.aio.client import Client as NATS

from trinity_platform import metrics
from trinity_platform.authz import required_permissions
from trinity_platform.config import ServiceSettings, load_settings, log_json
from trinity_platform.consumer import (
    TRANSIENT_MAX_DELAY,
    BatchHandler,
    Handler,
    PullConsumerRunner,
)
from trinity_platform.db import create_engine, is_postgres, run_migrations, wait_for_database
from trinity_platform.db_budget import log_connection_budget
from trinity_platform.db_errors import is_transient
from trinity_platform.grpc_server import (
    GrpcServerHandle,
    ServiceRegistration,
    build_server,
    check_listen_address,
)
from trinity_platform.idempotency import prune_idempotency
from trinity_platform.inbox import prune_inbox
from trinity_platform.interceptors import AuthInterceptor, ErrorMappingInterceptor, HandlerCache
from trinity_platform.logs import configure_logging, get_logger
from trinity_platform.nats_connect import connect_nats
from trinity_platform.outbox import OutboxSignal
from trinity_platform.pagination import configure_page_tokens, derive_page_token_keys
from trinity_platform.relay import OutboxRelay
from trinity_platform.request_checks import RequestCheckInterceptor
from trinity_platform.startup import StartupPhases
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import event_source
from trinity_platform.telemetry import (
    LogContextInterceptor,
    TelemetryInterceptor,
    configure_tracing,
    shutdown_tracing,
)

_log = get_logger(__name__)

BackgroundTask = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer the runtime starts after NATS is ready."""

    stream: str
    durable: str
    filter_subjects: Sequence[str]
    handler: Handler | None = None
    batch: int = 100
    ack_wait: float = 30.0
    max_deliver: int = -1
    concurrency: int = 1
    batch_handler: BatchHandler | None = None
    """Instead of ``handler``: gets each fetched batch whole (``concurrency`` unused)."""


@dataclass
class RuntimeOptions:
    stop_grace: float = 10.0
    relay: dict[str, Any] = field(default_factory=dict)  # extra OutboxRelay keyword arguments
    grpc_options: Sequence[tuple[str, Any]] = ()
    inbox_retention: timedelta | None = timedelta(days=7)
    idempotency_retention: timedelta | None = timedelta(days=7)
    prune_interval: float = 3600.0
    configure_logging: bool = True
    nats_reconnect_wait: float = 1.0


class ServiceRuntime:
    """Owns the infrastructure of one service process.

    ``engine`` and ``outbox_signal`` exist from construction (no I/O), so the
    composition root can wire repositories and handlers before ``start()``;
    ``nc`` / ``js`` exist after ``start()``.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        migrations: str | Path | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.settings = settings
        self.options = options or RuntimeOptions()
        self.migrations = migrations
        # Constructed by the composition root after the imports and the settings.
        self.startup = StartupPhases(settings.service)
        self.startup.mark("imports", defer=True)
        self.engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pgbouncer=settings.db_pgbouncer,
        )
        metrics.instrument_engine(self.engine)
        self.metrics: metrics.MetricsEndpoint | None = None
        self._samples: list[metrics.Sample] = []
        self.outbox_signal = OutboxSignal()
        self.nc: NATS | None = None
        self.relay: OutboxRelay | None = None
        self.grpc: GrpcServerHandle | None = None
        self._services: list[ServiceRegistration] = []
        self._interceptors: list[aio.ServerInterceptor] = []
        self._explicit_permissions: dict[str, str] = {}
        self._consumer_specs: list[ConsumerSpec] = []
        self._consumers: list[PullConsumerRunner] = []
        self._task_factories: list[tuple[str, BackgroundTask]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._stop_requested = asyncio.Event()
        self._started = False

    @classmethod
    def for_service(cls, service: str, **kwargs: Any) -> ServiceRuntime:
        """A runtime with the settings of ``service`` read from the environment."""
        return cls(load_settings(service), **kwargs)

    # ------------------------------------------------------------------ wiring

    def add_grpc_service(
        self,
        name: str,
        add_to_server: Callable[[Any, Any], None],
        servicer: object,
        permissions: Mapping[str, str] | None = None,
    ) -> None:
        """``permissions`` (method name → permission) only for a service without proto
        descriptors (tests); a proto service's RPCs declare theirs in their options."""
        self._services.append(ServiceRegistration(name, add_to_server, servicer))
        if permissions is not None:
            self._explicit_permissions.update(
                {f"/{name}/{method}": permission for method, permission in permissions.items()}
            )

    def add_interceptor(self, interceptor: aio.ServerInterceptor) -> None:
        """Runs inside the error mapping and authorization interceptors. Its handler for a
        method serves every call of it (:class:`HandlerCache`): read what a call brings
        from the call's context, not from ``handler_call_details``."""
        self._interceptors.append(interceptor)

    def add_consumer(self, spec: ConsumerSpec) -> None:
        self._consumer_specs.append(spec)

    def add_background_task(self, name: str, factory: BackgroundTask) -> None:
        """``factory()`` runs as a task from start to stop; it is restarted (with
        backoff) if it fails and cancelled at stop."""
        self._task_factories.append((name, factory))

    def add_metrics_sample(self, sample: metrics.Sample) -> None:
        """A query that sets gauges, run every ``metrics_interval`` while metrics are served."""
        self._samples.append(sample)

    def on_start(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Runs after NATS and the database are ready, before consumers start."""
        self._on_start.append(callback)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Runs after consumers and background tasks stopped (e.g. close gRPC channels)."""
        self._on_stop.append(callback)

    @property
    def js(self) -> Any:
        if self.nc is None:
            raise RuntimeError("NATS is connected at start()")
        return self.nc.jetstream()

    @property
    def port(self) -> int:
        if self.grpc is None:
            raise RuntimeError("the gRPC server is built at start()")
        return self.grpc.port

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("runtime already started")
        self._started = True
        settings = self.settings
        # A port in use: refuse before touching the database or NATS.
        check_listen_address(settings.listen, f"TRINITY_{settings.service.upper()}_LISTEN")
        if self.options.configure_logging:
            configure_logging(settings.log_level, json=log_json(settings.log_format))
        configure_tracing(f"trinity-{settings.service}", settings.traces_endpoint)
        log = _log.bind(service=settings.service)
        if not settings.page_token_key:
            log.warning(
                "TRINITY_PAGE_TOKEN_KEY is not set: page tokens are signed with a key derived "
                "from the database URL; set a secret in production"
            )
        configure_page_tokens(
            derive_page_token_keys(settings.page_token_key, settings.database_url)
        )
        phases = self.startup
        phases.mark("wiring")  # the composition root after the runtime, the event loop
        try:
            await wait_for_database(self.engine)
            phases.mark("database connect")
            # Behind PgBouncer the server's limits are PgBouncer's to keep.
            if is_postgres(self.engine) and not settings.db_pgbouncer:
                wanted = settings.db_pool_size + settings.db_max_overflow
                try:
                    await log_connection_budget(self.engine, wanted, settings.service)
                except Exception as exc:  # a check, never a reason not to start
                    log.warning("could not check the connection budget", error=repr(exc))
                phases.mark("connection budget check")
            if self.migrations is not None:
                await run_migrations(self.engine, self.migrations)
                phases.mark("migrations")
            log.info("database ready")
            self.nc = await connect_nats(
                settings.nats_url,
                name=f"trinity-{settings.service}",
                security=settings.nats_security,
                reconnect_wait=self.options.nats_reconnect_wait,
            )
            phases.mark("nats connect")
            await ensure_streams(
                self.nc.jetstream(), settings.stream_replicas, settings.stream_limits
            )
            phases.mark("stream checks")
            log.info("nats ready", url=settings.nats_url)
            self.relay = OutboxRelay(
                self.engine,
                self.nc,
                event_source(settings.service),
                signal=self.outbox_signal,
                **self.options.relay,
            )
            self.relay.start()
            if settings.metrics_listen:
                self.metrics = metrics.MetricsEndpoint(settings.metrics_listen)
                self.metrics.start()
                self._samples.insert(0, self.relay.sample_backlog)
            for callback in self._on_start:
                await callback()
            for spec in self._consumer_specs:
                runner = PullConsumerRunner(
                    self.nc.jetstream(),
                    stream=spec.stream,
                    durable=spec.durable,
                    filter_subjects=spec.filter_subjects,
                    handler=spec.handler,
                    batch_handler=spec.batch_handler,
                    batch=spec.batch,
                    ack_wait=spec.ack_wait,
                    max_deliver=spec.max_deliver,
                    concurrency=spec.concurrency,
                    is_transient=is_transient,
                )
                runner.start()
                self._consumers.append(runner)
            self._start_tasks()
            phases.mark("relay, consumers and background tasks")
            interceptors: list[aio.ServerInterceptor] = [
                HandlerCache(),  # each method's handler made once, not per call
                TelemetryInterceptor(),
                ErrorMappingInterceptor(),
                AuthInterceptor(settings.auth_tokens, self._permissions()),
            ]
            if not settings.auth_tokens:
                log.warning(
                    "authentication is off: every caller is anonymous and may call every RPC; "
                    "set TRINITY_AUTH_TOKENS to require tokens"
                )
            interceptors.extend(self._interceptors)
            interceptors.append(RequestCheckInterceptor())  # decodes the request
            interceptors.append(LogContextInterceptor())  # sees the decoded request
            self.grpc = build_server(
                settings.listen,
                self._services,
                interceptors,
                options=self.options.grpc_options,
                tls=settings.server_tls,
            )
            await self.grpc.start()
            phases.mark("server bind")
            await self.grpc.mark_serving()
            phases.mark("ready")
            log.info(
                "serving",
                listen=settings.listen,
                port=self.grpc.port,
                tls=(
                    "off"
                    if settings.server_tls is None
                    else "mutual"
                    if settings.server_tls.client_ca
                    else "on"
                ),
            )
            phases.ready()
        except BaseException:
            await self.stop()
            raise

    def _permissions(self) -> dict[str, str]:
        """The permission of every served RPC (raises when one declares none)."""
        described = [
            s.name
            for s in self._services
            if not any(key.startswith(f"/{s.name}/") for key in self._explicit_permissions)
        ]
        return {**required_permissions(described), **self._explicit_permissions}

    def _start_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        factories = list(self._task_factories)
        if self.options.inbox_retention or self.options.idempotency_retention:
            factories.append(("prune-inbox-idempotency", self._prune_loop))
        if self.metrics is not None and self._samples:
            samples, interval = list(self._samples), self.settings.metrics_interval
            factories.append(("metrics-samples", lambda: metrics.sample_forever(samples, interval)))
        for name, factory in factories:
            self._tasks.append(loop.create_task(self._supervise(name, factory), name=name))

    async def _supervise(self, name: str, factory: BackgroundTask) -> None:
        delay = 0.5
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_transient(exc):  # the database refused: back soon, no traceback
                    _log.warning("background task failed; restarting", task=name, error=repr(exc))
                    await asyncio.sleep(min(delay, TRANSIENT_MAX_DELAY))
                    continue
                _log.exception("background task failed; restarting", task=name, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _prune_loop(self) -> None:
        while True:
            if self.options.inbox_retention is not None:
                await prune_inbox(self.engine, self.options.inbox_retention)
            if self.options.idempotency_retention is not None:
                await prune_idempotency(self.engine, self.options.idempotency_retention)
            await asyncio.sleep(self.options.prune_interval)

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def stop(self) -> None:
        """Graceful stop (see the module docstring); safe to call more than once."""
        log = _log.bind(service=self.settings.service)
        if self.grpc is not None:
            grpc, self.grpc = self.grpc, None
            await grpc.stop(self.options.stop_grace)
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for callback in self._on_stop:
            try:
                await callback()
            except Exception:
                log.exception("stop callback failed")
        self._on_stop = []
        if self.relay is not None:
            relay, self.relay = self.relay, None
            await relay.stop(flush=True)
        if self.nc is not None:
            nc, self.nc = self.nc, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.drain(), 5.0)
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()
        await self.engine.dispose()
        if self.metrics is not None:
            endpoint, self.metrics = self.metrics, None
            await asyncio.to_thread(endpoint.stop)
        await asyncio.to_thread(shutdown_tracing)
        log.info("stopped")

    async def run_forever(self) -> None:
        """Start, serve until SIGTERM/SIGINT, stop gracefully (``python -m trinity_<service>``)."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
                installed.append(sig)
        try:
            starting = asyncio.ensure_future(self.start())
            stop_wait = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # stopped while waiting for the database or NATS
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting  # start() cleans up what it had started
                return
            starting.result()  # raise a start failure
            try:
                await stop_wait
            finally:
                _log.info("stopping", service=self.settings.service)
                await self.stop()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
