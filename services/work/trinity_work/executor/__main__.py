"""``python -m trinity_work.executor``: run one executor until SIGTERM/SIGINT.

Environment: ``TRINITY_EXECUTOR_CONFIG`` (YAML file; default: every agent runs
``echo``), ``TRINITY_WORK_TARGET`` (default 127.0.0.1:7404), ``TRINITY_NATS_URL``,
``TRINITY_EXECUTOR_ID``, ``TRINITY_EXECUTOR_TOKEN`` (bearer token for the work
service when it requires one), ``TRINITY_EXECUTOR_METRICS_LISTEN`` (host:port of its
Prometheus /metrics endpoint; none when unset), ``OTEL_EXPORTER_OTLP_ENDPOINT`` (where its
spans go; no tracing when unset), ``TRINITY_LOG_LEVEL``, ``TRINITY_LOG_FORMAT``,
and the TLS and NATS credential settings every process reads (``TRINITY_TLS_CA_FILE``…,
``TRINITY_NATS_USER``…).
"""

from __future__ import annotations

import asyncio
import os
import sys

from trinity_platform.config import DEFAULT_NATS_URL, log_json
from trinity_platform.entrypoint import run_main
from trinity_platform.logs import configure_logging
from trinity_platform.metrics import MetricsEndpoint
from trinity_platform.nats_connect import NatsConfigError, nats_security_from_env
from trinity_platform.startup import StartupPhases
from trinity_platform.telemetry import configure_tracing, shutdown_tracing
from trinity_platform.tls import TlsConfigError, client_tls_from_env
from trinity_work.executor.config import DEFAULT_TARGET, ConfigError, load_config
from trinity_work.executor.worker import Executor


def main() -> None:
    configure_logging(
        os.environ.get("TRINITY_LOG_LEVEL") or "INFO",
        json=log_json(os.environ.get("TRINITY_LOG_FORMAT") or "auto"),
    )
    run_main(
        "python -m trinity_work.executor",
        "An executor: takes work intents from the work queue, runs the agent, tool or "
        "notification, and reports the outcome to the work service.",
        run,
        epilog="environment:" + __doc__.split("Environment:", 1)[1].replace("``", ""),
    )


async def run() -> None:
    startup = StartupPhases("executor")
    startup.mark("imports")
    try:
        config = load_config(os.environ.get("TRINITY_EXECUTOR_CONFIG") or None)
        executor = Executor(
            config,
            target=os.environ.get("TRINITY_WORK_TARGET") or DEFAULT_TARGET,
            nats_url=os.environ.get("TRINITY_NATS_URL") or DEFAULT_NATS_URL,
            token=os.environ.get("TRINITY_EXECUTOR_TOKEN") or None,
            tls=client_tls_from_env(),
            nats_security=nats_security_from_env(),
            startup=startup,
        )
        startup.mark("config")
    except (ConfigError, TlsConfigError, NatsConfigError) as exc:
        print(f"trinity executor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_tracing("trinity-executor", os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "")
    endpoint = None
    listen = os.environ.get("TRINITY_EXECUTOR_METRICS_LISTEN")
    if listen:
        endpoint = MetricsEndpoint(listen)
        endpoint.start()
    try:
        await executor.run_forever()
    finally:
        if endpoint is not None:
            endpoint.stop()
        await asyncio.to_thread(shutdown_tracing)


if __name__ == "__main__":
    main()
