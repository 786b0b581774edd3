"""Service settings from the environment.

Every variable is listed in :func:`settings_table` so the README can be generated
from (and tested against) the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trinity_platform.authz import Identity, parse_auth_tokens
from trinity_platform.nats_connect import NatsSecurity, nats_security_from_env, nats_settings_table
from trinity_platform.streams import StreamLimits, stream_limits_from_env
from trinity_platform.tls import (
    ClientTls,
    ServerTls,
    client_tls_from_env,
    server_tls_from_env,
    tls_settings_table,
)

# Below Linux's ephemeral range (32768-60999), where any outgoing connection (or its
# TIME_WAIT) may hold a port for a while, and clear of NATS (4222, 6222, 8222) and
# the usual development ports; the anchors do the same (Temporal 7233, Zeebe 26500).
DEFAULT_PORTS: dict[str, int] = {
    "definition": 7401,
    "execution": 7402,
    "approval": 7403,
    "work": 7404,
}

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATA_DIR = ".data"
DEFAULT_LOG_LEVEL = "INFO"
# Connections one process may hold: pool + overflow. Eight processes (every service
# twice) then ask for 80, inside PostgreSQL's default 100 minus 3 reserved.
DEFAULT_DB_POOL_SIZE = 5
DEFAULT_DB_MAX_OVERFLOW = 5


@dataclass(frozen=True)
class ServiceSettings:
    service: str
    nats_url: str
    data_dir: Path
    database_url: str
    listen: str
    auth_tokens: Mapping[str, Identity] = field(default_factory=dict)
    # Bearer token this service sends on its own calls to the other services.
    service_token: str = ""
    log_level: str = DEFAULT_LOG_LEVEL
    stream_replicas: int = 1
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    metrics_listen: str = ""  # "" = no /metrics endpoint
    metrics_interval: float = 5.0
    traces_endpoint: str = ""  # OTLP/gRPC collector; "" = tracing off
    log_format: str = "auto"  # json, console, or auto (JSON unless stderr is a terminal)
    server_tls: ServerTls | None = None  # TLS of this service's gRPC server
    client_tls: ClientTls | None = None  # TLS of its calls to the other services
    nats_security: NatsSecurity = field(default_factory=NatsSecurity)
    page_token_key: str = field(default="", repr=False)
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    db_max_overflow: int = DEFAULT_DB_MAX_OVERFLOW
    db_pgbouncer: bool = False


def normalize_database_url(url: str) -> str:
    """Pick the asyncio driver: ``postgresql://`` → ``postgresql+asyncpg://``,
    ``sqlite://`` → ``sqlite+aiosqlite://``."""
    for plain, async_ in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return async_ + url[len(plain) :]
    return url


def _env_prefix(service: str) -> str:
    return f"TRINITY_{service.upper()}_"


def _int_setting(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool_setting(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "false").strip().lower()
    if raw not in {"true", "false", "1", "0", "yes", "no"}:
        raise ValueError(f"{name} must be true or false, got {raw!r}")
    return raw in {"true", "1", "yes"}


def load_settings(
    service: str, default_port: int | None = None, env: Mapping[str, str] | None = None
) -> ServiceSettings:
    """Read the settings of ``service`` from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    port = DEFAULT_PORTS.get(service, 7400) if default_port is None else default_port
    prefix = _env_prefix(service)
    data_dir = Path(env.get("TRINITY_DATA_DIR") or DEFAULT_DATA_DIR)
    database_url = (
        env.get(f"{prefix}DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir}/{service}.db"
    )
    raw_replicas = env.get("TRINITY_STREAM_REPLICAS") or "1"
    try:
        replicas = int(raw_replicas)
    except ValueError:
        raise ValueError(
            f"TRINITY_STREAM_REPLICAS must be an integer, got {raw_replicas!r}"
        ) from None
    if replicas < 1:
        raise ValueError("TRINITY_STREAM_REPLICAS must be at least 1")
    return ServiceSettings(
        service=service,
        nats_url=env.get("TRINITY_NATS_URL") or DEFAULT_NATS_URL,
        data_dir=data_dir,
        database_url=normalize_database_url(database_url),
        listen=env.get(f"{prefix}LISTEN") or f"127.0.0.1:{port}",
        auth_tokens=parse_auth_tokens(env.get("TRINITY_AUTH_TOKENS", "")),
        service_token=(env.get("TRINITY_SERVICE_TOKEN") or "").strip(),
        log_level=(env.get("TRINITY_LOG_LEVEL") or DEFAULT_LOG_LEVEL).upper(),
        stream_replicas=replicas,
        stream_limits=stream_limits_from_env(env),
        metrics_listen=_metrics_listen(env.get(f"{prefix}METRICS_LISTEN") or ""),
        metrics_interval=_positive_seconds(env, "TRINITY_METRICS_INTERVAL", 5.0),
        log_format=_log_format(env),
        traces_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "",
        server_tls=server_tls_from_env(env),
        client_tls=client_tls_from_env(env),
        nats_security=nats_security_from_env(env),
        page_token_key=env.get("TRINITY_PAGE_TOKEN_KEY", ""),
        db_pool_size=_int_setting(env, f"{prefix}DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE, 1),
        db_max_overflow=_int_setting(env, f"{prefix}DB_MAX_OVERFLOW", DEFAULT_DB_MAX_OVERFLOW, 0),
        db_pgbouncer=_bool_setting(env, f"{prefix}DB_PGBOUNCER"),
    )


LOG_FORMATS = ("auto", "json", "console")


def _metrics_listen(value: str) -> str:
    return "" if value.strip().lower() in ("", "off") else value.strip()


def _positive_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return value


def _log_format(env: Mapping[str, str]) -> str:
    value = (env.get("TRINITY_LOG_FORMAT") or "auto").lower()
    if value not in LOG_FORMATS:
        raise ValueError(
            f"TRINITY_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {value!r}"
        )
    return value


def log_json(log_format: str) -> bool | None:
    """The ``json`` argument of ``configure_logging`` for a ``TRINITY_LOG_FORMAT`` value."""
    return {"json": True, "console": False}.get(log_format)


def service_target(service: str, env: Mapping[str, str] | None = None) -> str:
    """Where other processes reach ``service``: ``TRINITY_<SERVICE>_TARGET`` or its default port."""
    env = os.environ if env is None else env
    return env.get(f"{_env_prefix(service)}TARGET") or f"127.0.0.1:{DEFAULT_PORTS[service]}"


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting; ``<SERVICE>`` is the service name."""
    return [
        ("TRINITY_NATS_URL", DEFAULT_NATS_URL, "NATS server(s), comma-separated"),
        ("TRINITY_DATA_DIR", DEFAULT_DATA_DIR, "folder of the embedded SQLite databases"),
        (
            "TRINITY_<SERVICE>_DATABASE_URL",
            "sqlite+aiosqlite:///<data_dir>/<service>.db",
            "database of one service; postgresql://… selects PostgreSQL (asyncpg)",
        ),
        (
            "TRINITY_<SERVICE>_LISTEN",
            "127.0.0.1:<port> (definition 7401, execution 7402, approval 7403, work 7404)",
            "gRPC listen address of one service",
        ),
        (
            "TRINITY_<SERVICE>_TARGET",
            "127.0.0.1:<port>",
            "where the other services and executors reach one service",
        ),
        (
            "TRINITY_AUTH_TOKENS",
            "(empty: no authentication)",
            "static bearer tokens with roles, 'token=principal:role+role,…' "
            "(roles: admin, author, operator, viewer, approver, executor, service; "
            "none given: viewer+approver); set, every call needs a token",
        ),
        (
            "TRINITY_SERVICE_TOKEN",
            "(empty)",
            "bearer token a service sends on its calls to the other services "
            "(its identity needs the service role)",
        ),
        (
            "TRINITY_<SERVICE>_DB_POOL_SIZE",
            str(DEFAULT_DB_POOL_SIZE),
            "PostgreSQL connections one process keeps open (see deploy/README.md, connection budget)",
        ),
        (
            "TRINITY_<SERVICE>_DB_MAX_OVERFLOW",
            str(DEFAULT_DB_MAX_OVERFLOW),
            "PostgreSQL connections one process may open beyond the pool under load",
        ),
        (
            "TRINITY_<SERVICE>_DB_PGBOUNCER",
            "false",
            "true when the database URL points at PgBouncer in transaction mode "
            "(no server-side prepared statement cache)",
        ),
        ("TRINITY_LOG_LEVEL", DEFAULT_LOG_LEVEL, "DEBUG, INFO, WARNING or ERROR"),
        (
            "TRINITY_LOG_FORMAT",
            "auto",
            "json (one JSON object a line), console, or auto: JSON unless stderr is a terminal",
        ),
        (
            "TRINITY_<SERVICE>_METRICS_LISTEN",
            "(empty: no metrics endpoint)",
            "host:port of the Prometheus /metrics endpoint of one service "
            "(`make run`: 127.0.0.1:9461 to 9464; off turns it off)",
        ),
        (
            "TRINITY_METRICS_INTERVAL",
            "5",
            "seconds between refreshes of the sampled gauges (backlogs, pending approvals, "
            "executions by status)",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "(empty: no tracing)",
            "OTLP/gRPC collector the traces go to (e.g. http://127.0.0.1:4317); "
            "the other standard OTEL_* variables apply",
        ),
        ("TRINITY_STREAM_REPLICAS", "1", "replicas of the JetStream streams (3 in a cluster)"),
        (
            "TRINITY_FACTS_MAX_AGE",
            "30d",
            "how long the facts streams keep a fact (0: forever); the oldest go first",
        ),
        (
            "TRINITY_FACTS_MAX_BYTES",
            "-1 (no limit)",
            "size limit of each facts stream in bytes; at the limit the oldest facts go",
        ),
        (
            "TRINITY_WORK_QUEUE_MAX_MSGS",
            "100000",
            "intents the work queue holds; at the limit new ones wait in the work "
            "service's outbox (-1: no limit)",
        ),
        (
            "TRINITY_WORK_QUEUE_MAX_BYTES",
            "-1 (no limit)",
            "size limit of the work queue in bytes; at the limit new intents wait in the outbox",
        ),
        (
            "TRINITY_PAGE_TOKEN_KEY",
            "(derived from the database URL, with a warning)",
            "secret signing page tokens (HMAC); comma-separated to rotate: the first signs, "
            "all are accepted",
        ),
    ]


def security_settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of the gRPC TLS and NATS credential settings."""
    return tls_settings_table() + nats_settings_table()


def _markdown(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{default}` | {meaning} |" for name, default, meaning in rows]
    return "\n".join(lines)


def settings_markdown() -> str:
    """:func:`settings_table` as a Markdown table (the README embeds it verbatim)."""
    return _markdown(settings_table())


def security_settings_markdown() -> str:
    """:func:`security_settings_table` as a Markdown table (the README embeds it verbatim)."""
    return _markdown(security_settings_table())
