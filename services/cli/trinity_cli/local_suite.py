"""Start and stop the whole suite on one machine: NATS (when none answers), the
four services and the executors, each a real subprocess.

`make run` uses it, and so do the end-to-end tests (with free ports, a private
NATS and a temporary data folder).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trinity_platform.authz import Identity, format_auth_tokens, parse_auth_tokens
from trinity_platform.channels import PROBE_OPTIONS, open_blocking_channel
from trinity_platform.config import DEFAULT_PORTS
from trinity_platform.testing.nats_server import find_nats_server
from trinity_platform.tls import client_tls_from_env

SERVICES = ("definition", "execution", "approval", "work")
# Each service's health is asked by its gRPC service's name: another server that
# happens to listen on the port (any gRPC server answers SERVING for "") is not it.
GRPC_SERVICES = {s: f"trinity.process.{s}.v1.{s.capitalize()}Service" for s in SERVICES}
# Prometheus /metrics of `make run`; executor i gets 9470 + i.
DEFAULT_METRICS_PORTS = {"definition": 9461, "execution": 9462, "approval": 9463, "work": 9464}
EXECUTOR_METRICS_PORT = 9470


def port_answers(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class LocalSuite:
    """The services as subprocesses sharing one data folder and one NATS."""

    data_dir: Path
    nats_url: str = "nats://127.0.0.1:4222"
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    database_urls: Mapping[str, str] = field(default_factory=dict)
    executor_config: Path | None = None
    executors: int = 1
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Where each process serves /metrics: service names and "executor-<i>"; none when absent.
    metrics_ports: Mapping[str, int] = field(default_factory=dict)
    log_to_files: bool = True
    services: Sequence[str] = SERVICES
    # The web console's port; None starts no console.
    console_port: int | None = None
    # Settings of one kind of process only ("definition", …, "executor"), e.g. its own
    # NATS user and password.
    process_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    nats_started: bool | None = field(default=None, init=False)  # None: not looked yet
    # Identities the suite gives its own processes when authentication is on: one service
    # token per service, one executor token per executor, and an admin token (``admin_token``)
    # for whoever drives the suite (``make run`` publishing the examples, the tests).
    # False: the caller configures every token itself (processes joining another suite).
    own_identities: bool = True
    _own_tokens: dict[str, Identity] = field(default_factory=dict, init=False)
    admin_token: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if not self.own_identities:
            return
        if not self.extra_env.get("TRINITY_AUTH_TOKENS", os.environ.get("TRINITY_AUTH_TOKENS")):
            return  # authentication off: nobody needs a token
        for service in SERVICES:
            self._own_tokens[secrets.token_urlsafe(18)] = Identity(
                f"service:{service}", frozenset({"service"})
            )
        for index in range(max(self.executors, 1)):
            self._own_tokens[secrets.token_urlsafe(18)] = Identity(
                self.executor_id(index), frozenset({"executor"})
            )
        self.admin_token = secrets.token_urlsafe(18)
        self._own_tokens[self.admin_token] = Identity("admin@local", frozenset({"admin"}))

    @staticmethod
    def executor_id(index: int) -> str:
        return f"executor:local-{index}"

    def _token_of(self, principal: str) -> str:
        return next((t for t, i in self._own_tokens.items() if i.principal == principal), "")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "TRINITY_NATS_URL": self.nats_url,
                "TRINITY_DATA_DIR": str(self.data_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for service in SERVICES:
            env[f"TRINITY_{service.upper()}_LISTEN"] = f"127.0.0.1:{self.ports[service]}"
            env[f"TRINITY_{service.upper()}_TARGET"] = f"127.0.0.1:{self.ports[service]}"
            if service in self.metrics_ports:
                env[f"TRINITY_{service.upper()}_METRICS_LISTEN"] = (
                    f"127.0.0.1:{self.metrics_ports[service]}"
                )
            if service in self.database_urls:
                env[f"TRINITY_{service.upper()}_DATABASE_URL"] = self.database_urls[service]
        if self.console_port is not None:
            env["TRINITY_CONSOLE_LISTEN"] = f"127.0.0.1:{self.console_port}"
        if self.executor_config is not None:
            env["TRINITY_EXECUTOR_CONFIG"] = str(self.executor_config)
        env.update(self.extra_env)
        if self._own_tokens:
            configured = parse_auth_tokens(env.get("TRINITY_AUTH_TOKENS", ""))
            env["TRINITY_AUTH_TOKENS"] = format_auth_tokens({**configured, **self._own_tokens})
        return env

    def service_env(self, service: str) -> dict[str, str]:
        """What one service process adds to :meth:`env`: its own token."""
        token = self._token_of(f"service:{service}")
        own = dict(self.process_env.get(service, {}))
        return {**own, "TRINITY_SERVICE_TOKEN": token} if token else own

    def executor_env(self, index: int) -> dict[str, str]:
        """What one executor adds to :meth:`env`: its id and its token."""
        token = self._token_of(self.executor_id(index))
        own = dict(self.process_env.get("executor", {}))
        if not token:
            return own
        return {
            **own,
            "TRINITY_EXECUTOR_TOKEN": token,
            "TRINITY_EXECUTOR_ID": self.executor_id(index),
        }

    def ensure_nats(self) -> bool:
        """Start a JetStream server when none answers at nats_url; True when it started one."""
        url = urlparse(self.nats_url)
        host, port = url.hostname or "127.0.0.1", url.port or 4222
        if port_answers(host, port):
            self.nats_started = False
            return False
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "nats",
            [find_nats_server(), "-js", "-a", host, "-p", str(port), "-sd", str(store)],
        )
        deadline = time.monotonic() + 10
        while not port_answers(host, port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on {host}:{port}")
            time.sleep(0.05)
        self.nats_started = True
        return True

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.nats_started is None:
            self.ensure_nats()
        for service in self.services:
            self.start_service(service)
        for index in range(self.executors):
            self.start_executor(index)
        if self.console_port is not None:
            self._spawn("console", [sys.executable, "-m", "trinity_console"])

    def start_service(self, service: str) -> None:
        self._spawn(
            service, [sys.executable, "-m", f"trinity_{service}"], self.service_env(service)
        )

    def start_executor(self, index: int = 0) -> None:
        name = f"executor-{index}"
        env = self.executor_env(index)
        if name in self.metrics_ports:
            env["TRINITY_EXECUTOR_METRICS_LISTEN"] = f"127.0.0.1:{self.metrics_ports[name]}"
        self._spawn(name, [sys.executable, "-m", "trinity_work.executor"], env)

    def start_replica(self, service: str, replica: int, port: int) -> str:
        """Another process of `service` on `port`, sharing its database and NATS.

        Other processes reach it when their TARGET lists it (``ip:port,ip:port``); it
        consumes, relays and claims work beside the first. Returns the process name
        (for kill/stop).
        """
        name = f"{service}-{replica}"
        # A replica serves no /metrics (its first process holds the port).
        env = {
            f"TRINITY_{service.upper()}_LISTEN": f"127.0.0.1:{port}",
            f"TRINITY_{service.upper()}_METRICS_LISTEN": "",
            **self.service_env(service),
        }
        self._spawn(name, [sys.executable, "-m", f"trinity_{service}"], env)
        return name

    def wait_serving(self, port: int, name: str, timeout: float = 60.0) -> None:
        """Block until the process `name` answers SERVING on `port`."""
        deadline = time.monotonic() + timeout
        service = GRPC_SERVICES[name.split("-")[0]]
        while not self._serving(f"127.0.0.1:{port}", self.env(), service):
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} not SERVING on {port}: {self.log_tail(name)}")
            time.sleep(0.1)

    def _spawn(
        self, name: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> None:
        if self.log_to_files:
            log_dir = self.data_dir / "logs"
            log_dir.mkdir(parents=True, exist_ok=True)
            out: int | object = (log_dir / f"{name}.log").open("ab")
        else:
            out = None
        self._procs[name] = subprocess.Popen(
            argv,
            env={**self.env(), **(extra_env or {})},
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until every service's grpc.health.v1 answers SERVING."""
        deadline = time.monotonic() + timeout
        for service in self.services:
            target = f"127.0.0.1:{self.ports[service]}"
            while not self._serving(target, self.env(), GRPC_SERVICES[service]):
                proc = self._procs.get(service)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(
                        f"{service} exited with {proc.returncode}: {self.log_tail(service)}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{service} not SERVING on {target}: {self.log_tail(service)}"
                    )
                time.sleep(0.1)

        if self.console_port is not None:
            self.wait_console(deadline)

    def wait_console(self, deadline: float) -> None:
        """Block until the console answers its health probe."""
        url = f"http://127.0.0.1:{self.console_port}/healthz"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            proc = self._procs.get("console")
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"console exited with {proc.returncode}: {self.log_tail('console')}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"console not answering on {url}: {self.log_tail('console')}")
            time.sleep(0.1)

    @staticmethod
    def _serving(target: str, env: Mapping[str, str], service: str) -> bool:
        try:
            tls = client_tls_from_env(env)
            with open_blocking_channel(target, tls=tls, options=PROBE_OPTIONS) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1.0
                )
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self, name: str) -> None:
        """SIGKILL one process (crash tests)."""
        proc = self._procs.pop(name)
        proc.kill()
        proc.wait()

    def stop(self, name: str | None = None, timeout: float = 15.0) -> None:
        """SIGTERM (graceful) one process or all, newest first; SIGKILL stragglers."""
        names = [name] if name else list(reversed(self._procs))
        for each in names:
            proc = self._procs.get(each)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for each in names:
            proc = self._procs.pop(each, None)
            if proc is None:
                continue
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def running(self) -> dict[str, int | None]:
        return {name: proc.poll() for name, proc in self._procs.items()}
