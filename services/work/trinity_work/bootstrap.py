"""Composition root of the work service: settings → runtime, unit of work, handlers, API."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trinity.process.work.v1 import work_service_pb2_grpc
from trinity_platform.config import ServiceSettings, load_settings
from trinity_platform.runtime import RuntimeOptions, ServiceRuntime
from trinity_platform.sql_unit_of_work import SqlUnitOfWork
from trinity_work.api.servicer import SERVICE_NAME, WorkServicer
from trinity_work.application.handlers import WorkHandlers
from trinity_work.infrastructure.lease_watcher import watch_leases
from trinity_work.infrastructure.transaction import SqlWorkTransaction

SERVICE = "work"
MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class WorkOptions:
    """Settings of the work service beyond the shared ones."""

    lease_check_interval: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkOptions:
        env = os.environ if env is None else env
        raw = env.get("TRINITY_WORK_LEASE_CHECK_INTERVAL") or "1.0"
        try:
            interval = float(raw)
        except ValueError:
            raise ValueError(
                f"TRINITY_WORK_LEASE_CHECK_INTERVAL must be a number of seconds, got {raw!r}"
            ) from None
        if interval <= 0:
            raise ValueError("TRINITY_WORK_LEASE_CHECK_INTERVAL must be positive")
        return cls(lease_check_interval=interval)


@dataclass
class WorkService:
    runtime: ServiceRuntime
    handlers: WorkHandlers


def bootstrap(
    settings: ServiceSettings | None = None,
    options: WorkOptions | None = None,
    runtime_options: RuntimeOptions | None = None,
) -> WorkService:
    """Wire the service (no I/O: ``service.runtime.start()`` does it)."""
    settings = settings or load_settings(SERVICE)
    options = options or WorkOptions.from_env()
    runtime = ServiceRuntime(settings, migrations=MIGRATIONS, options=runtime_options)
    handlers = WorkHandlers(
        SqlUnitOfWork(
            runtime.engine, SqlWorkTransaction, signal=runtime.outbox_signal, name=SERVICE
        )
    )
    runtime.add_grpc_service(
        SERVICE_NAME,
        work_service_pb2_grpc.add_WorkServiceServicer_to_server,
        WorkServicer(handlers),
    )
    runtime.add_background_task(
        "lease-watcher", lambda: watch_leases(handlers, options.lease_check_interval)
    )
    return WorkService(runtime, handlers)
