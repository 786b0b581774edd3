"""The console's settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from trinity_platform.authz import parse_auth_tokens
from trinity_platform.config import service_target
from trinity_platform.tls import ClientTls, client_tls_from_env

DEFAULT_LISTEN = "127.0.0.1:7400"
# The services the console calls (work is left to executors and operators' tools).
BACKENDS = ("definition", "execution", "approval")


@dataclass(frozen=True)
class ConsoleSettings:
    host: str = "127.0.0.1"
    port: int = 7400
    targets: Mapping[str, str] = field(default_factory=dict)
    # token → principal, the services' own table; empty when authentication is off.
    principals: Mapping[str, str] = field(default_factory=dict)
    # Mark the session cookie Secure (set when the console is served over HTTPS).
    secure_cookie: bool = False
    # Deadline of one unary call to a service, in seconds.
    call_timeout: float = 10.0
    # TLS to the services (the platform's TRINITY_TLS_* client settings); None: plaintext.
    tls: ClientTls | None = None

    @property
    def authentication(self) -> bool:
        return bool(self.principals)


def load_settings(env: Mapping[str, str] | None = None) -> ConsoleSettings:
    """``TRINITY_CONSOLE_LISTEN``, ``TRINITY_CONSOLE_SECURE_COOKIE``, the services'
    ``TRINITY_<SERVICE>_TARGET``, ``TRINITY_AUTH_TOKENS`` and the client TLS settings."""
    env = os.environ if env is None else env
    listen = env.get("TRINITY_CONSOLE_LISTEN") or DEFAULT_LISTEN
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"TRINITY_CONSOLE_LISTEN must look like 'host:port', got {listen!r}")
    secure = (env.get("TRINITY_CONSOLE_SECURE_COOKIE") or "false").strip().lower()
    if secure not in ("true", "false", "1", "0"):
        raise ValueError("TRINITY_CONSOLE_SECURE_COOKIE must be true or false")
    return ConsoleSettings(
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        targets={service: service_target(service, env) for service in BACKENDS},
        principals={
            token: identity.principal
            for token, identity in parse_auth_tokens(env.get("TRINITY_AUTH_TOKENS", "")).items()
        },
        secure_cookie=secure in ("true", "1"),
        tls=client_tls_from_env(env),
    )
