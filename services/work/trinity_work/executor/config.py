"""Executor configuration: a YAML file (``TRINITY_EXECUTOR_CONFIG``) read into frozen values.

See ``services/work/executor.example.yaml`` and the README for the format. Values of
the form ``${NAME}`` are read from the executor's environment when they are used
(never when they are loaded, and never sent anywhere): that is how credentials
reach a backend.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trinity_work.domain.model import ActionKind, WorkKind

DEFAULT_TARGET = "127.0.0.1:7404"
ALL_KINDS = (WorkKind.AGENT_TASK, WorkKind.TOOL_RUN, WorkKind.NOTIFICATION)
AGENT_BACKENDS = ("echo", "script", "http", "mcp", "command")
FALLBACK_AGENT = "*"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # {name} in a tool's argv
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """The executor configuration is invalid; the message says where."""


class MissingVariable(LookupError):
    """A ``${NAME}`` reference names a variable that is not set."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def expand(value: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``${NAME}`` with the environment variable; raises :class:`MissingVariable`."""
    env = os.environ if env is None else env

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if not env.get(name):
            raise MissingVariable(name)
        return env[name]

    return _ENV_REF.sub(repl, value)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from ``30``, ``2.5``, ``"500ms"``, ``"30s"``, ``"5m"`` or ``"1h"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(f"{where}: not a duration (use 500ms, 30s, 5m, 1h): {value!r}")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{where}: must be positive")
    return seconds


@dataclass(frozen=True)
class AgentConfig:
    """One agent name → a backend and its options (see the README for each backend)."""

    name: str
    backend: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolArgument:
    pattern: str = r"^[A-Za-z0-9_./:=@+-]*$"
    default: str | None = None


@dataclass(frozen=True)
class ToolConfig:
    """The allow-listed command of one action kind; ``{name}`` in an argv element is
    replaced by the run's argument ``name`` (declared in ``arguments``)."""

    action: ActionKind
    command: tuple[str, ...]
    arguments: Mapping[str, ToolArgument] = field(default_factory=dict)
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None


@dataclass(frozen=True)
class ExecutorConfig:
    executor_id: str
    kinds: tuple[WorkKind, ...] = ALL_KINDS
    concurrency: int = 4
    lease: float = 30.0
    heartbeat_interval: float = 10.0
    shutdown_grace: float = 30.0
    max_timeout: float | None = None
    result_inline_limit: int = 65_536
    evidence_dir: Path = Path(".data/evidence")
    ack_wait: float = 30.0
    fetch_timeout: float = 2.0
    agents: Mapping[str, AgentConfig] = field(default_factory=dict)
    tools: Mapping[ActionKind, ToolConfig] = field(default_factory=dict)
    notifications: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    base_dir: Path = Path(".")

    def agent(self, name: str) -> AgentConfig | None:
        return self.agents.get(name) or self.agents.get(FALLBACK_AGENT)

    def path(self, value: str) -> Path:
        """A configured path; relative ones are relative to the configuration file."""
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (self.base_dir / path)


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping")
    return value


def _kinds(value: Any) -> tuple[WorkKind, ...]:
    if value is None:
        return ALL_KINDS
    if not isinstance(value, list) or not value:
        raise ConfigError("kinds: must be a non-empty list of agent_task, tool_run, notification")
    try:
        return tuple(WorkKind(str(v)) for v in value)
    except ValueError as exc:
        raise ConfigError(f"kinds: {exc}") from None


def _agents(value: Any) -> dict[str, AgentConfig]:
    agents = {}
    for name, raw in _mapping(value, "agents").items():
        options = dict(_mapping(raw, f"agents.{name}"))
        backend = str(options.pop("backend", ""))
        if backend not in AGENT_BACKENDS:
            raise ConfigError(f"agents.{name}.backend: must be one of {', '.join(AGENT_BACKENDS)}")
        agents[str(name)] = AgentConfig(str(name), backend, options)
    return agents


def _argv(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a non-empty list of strings (argv, no shell)")
    return tuple(value)


def _tools(value: Any) -> dict[ActionKind, ToolConfig]:
    tools = {}
    for name, raw in _mapping(value, "tools").items():
        where = f"tools.{name}"
        try:
            action = ActionKind(str(name))
        except ValueError:
            raise ConfigError(
                f"{where}: unknown action kind (scaffold, generate, verify, publish)"
            ) from None
        data = _mapping(raw, where)
        arguments = {}
        for arg, spec in _mapping(data.get("arguments"), f"{where}.arguments").items():
            spec = _mapping(spec, f"{where}.arguments.{arg}")
            pattern = str(spec.get("pattern", ToolArgument.pattern))
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}.arguments.{arg}.pattern: {exc}") from None
            default = spec.get("default")
            arguments[str(arg)] = ToolArgument(pattern, None if default is None else str(default))
        command = _argv(data.get("command"), f"{where}.command")
        for element in command:
            for ref in PLACEHOLDER.findall(element):
                if ref not in arguments:
                    raise ConfigError(f"{where}.command: {{{ref}}} is not a declared argument")
        tools[action] = ToolConfig(
            action=action,
            command=command,
            arguments=arguments,
            cwd=str(data["cwd"]) if data.get("cwd") else None,
            env={str(k): str(v) for k, v in _mapping(data.get("env"), f"{where}.env").items()},
            timeout=parse_duration(data["timeout"], f"{where}.timeout")
            if "timeout" in data
            else None,
        )
    return tools


_KNOWN = {
    "executor_id", "kinds", "concurrency", "lease", "heartbeat_interval", "shutdown_grace",
    "max_timeout", "result_inline_limit", "evidence_dir", "ack_wait", "fetch_timeout",
    "agents", "tools", "notifications",
}  # fmt: skip


def parse_config(
    data: Mapping[str, Any] | None,
    *,
    base_dir: Path = Path("."),
    env: Mapping[str, str] | None = None,
) -> ExecutorConfig:
    """Build the configuration from parsed YAML (None: the defaults)."""
    env = os.environ if env is None else env
    data = dict(data or {})
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
    data_dir = Path(env.get("TRINITY_DATA_DIR") or ".data")
    concurrency = int(data.get("concurrency", 4))
    if concurrency < 1:
        raise ConfigError("concurrency: must be at least 1")
    lease = parse_duration(data.get("lease", 30), "lease")
    heartbeat = parse_duration(data.get("heartbeat_interval", lease / 3), "heartbeat_interval")
    if heartbeat >= lease:
        raise ConfigError("heartbeat_interval: must be shorter than the lease")
    limit = int(data.get("result_inline_limit", 65_536))
    if limit < 1:
        raise ConfigError("result_inline_limit: must be positive")
    agents = (
        _agents(data.get("agents"))
        if "agents" in data
        else {FALLBACK_AGENT: AgentConfig(FALLBACK_AGENT, "echo")}
    )
    notifications = _mapping(data.get("notifications"), "notifications")
    for channel in notifications:
        if channel not in ("webhook", "email", "slack", "file"):
            raise ConfigError(
                f"notifications.{channel}: unknown channel (webhook, email, slack, file)"
            )
    if "notifications" not in data:
        notifications = {"file": {"directory": str(data_dir / "notifications")}}
    evidence = data.get("evidence_dir")
    config = ExecutorConfig(
        executor_id=str(
            data.get("executor_id") or env.get("TRINITY_EXECUTOR_ID") or default_executor_id()
        ),
        kinds=_kinds(data.get("kinds")),
        concurrency=concurrency,
        lease=lease,
        heartbeat_interval=heartbeat,
        shutdown_grace=parse_duration(data.get("shutdown_grace", 30), "shutdown_grace"),
        max_timeout=(
            parse_duration(data["max_timeout"], "max_timeout") if "max_timeout" in data else None
        ),
        result_inline_limit=limit,
        evidence_dir=_under(base_dir, str(evidence)) if evidence else data_dir / "evidence",
        ack_wait=parse_duration(data.get("ack_wait", 30), "ack_wait"),
        fetch_timeout=parse_duration(data.get("fetch_timeout", 2), "fetch_timeout"),
        agents=agents,
        tools=_tools(data.get("tools")),
        notifications={str(k): _mapping(v, f"notifications.{k}") for k, v in notifications.items()},
        base_dir=base_dir,
    )
    return config


def _under(base_dir: Path, value: str) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base_dir / path


def load_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> ExecutorConfig:
    """Read the YAML file at ``path`` (None: the defaults: every agent name runs ``echo``)."""
    if path is None:
        return parse_config(None, env=env)
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read executor configuration {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return parse_config(data, base_dir=path.parent.resolve(), env=env)
