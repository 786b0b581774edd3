"""The one way a process connects to NATS: servers, TLS and credentials from settings.

Credentials (any one): ``TRINITY_NATS_USER`` + ``TRINITY_NATS_PASSWORD``, a creds file
(``TRINITY_NATS_CREDS_FILE``, a JWT + NKEY seed) or an NKEY seed file
(``TRINITY_NATS_NKEY_SEED_FILE``); the last two need the ``nkeys`` package. TLS:
``TRINITY_NATS_CA_FILE`` (the CA the server's certificate must chain to; turns TLS
on), ``TRINITY_NATS_CERT_FILE`` + ``TRINITY_NATS_KEY_FILE`` (a client certificate
for servers that verify clients). The broker decides what each identity may
publish and subscribe (``deploy/k8s/base/nats/authorization.conf``).

Only NATS and the standard library are imported, so executors stay light.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS

from trinity_platform.logs import get_logger

_log = get_logger(__name__)

USER = "TRINITY_NATS_USER"
PASSWORD = "TRINITY_NATS_PASSWORD"
CREDS_FILE = "TRINITY_NATS_CREDS_FILE"
NKEY_SEED_FILE = "TRINITY_NATS_NKEY_SEED_FILE"
CA_FILE = "TRINITY_NATS_CA_FILE"
CERT_FILE = "TRINITY_NATS_CERT_FILE"
KEY_FILE = "TRINITY_NATS_KEY_FILE"


class NatsConfigError(ValueError):
    """NATS security settings that are incomplete or unusable."""


@dataclass(frozen=True)
class NatsSecurity:
    user: str | None = None
    password: str | None = None
    creds_file: str | None = None
    nkey_seed_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file and self.key_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` for these settings."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password or ""
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        if self.nkey_seed_file:
            options["nkeys_seed"] = self.nkey_seed_file
        context = self.tls_context()
        if context is not None:
            options["tls"] = context
        return options


def _existing_file(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name)
    if not path:
        return None
    if not Path(path).is_file():
        raise NatsConfigError(f"{name}={path}: no such file")
    return path


def nats_security_from_env(env: Mapping[str, str] | None = None) -> NatsSecurity:
    env = os.environ if env is None else env
    user, password = env.get(USER) or None, env.get(PASSWORD) or None
    if password is not None and user is None:
        raise NatsConfigError(f"{PASSWORD} needs {USER}")
    creds, seed = _existing_file(env, CREDS_FILE), _existing_file(env, NKEY_SEED_FILE)
    if (creds or seed) and importlib.util.find_spec("nkeys") is None:
        raise NatsConfigError(f"{CREDS_FILE} / {NKEY_SEED_FILE} need the 'nkeys' package")
    cert, key = _existing_file(env, CERT_FILE), _existing_file(env, KEY_FILE)
    if (cert is None) != (key is None):
        raise NatsConfigError(f"{CERT_FILE} and {KEY_FILE} go together")
    ca = _existing_file(env, CA_FILE)
    if cert and not ca:
        raise NatsConfigError(f"{CERT_FILE} needs {CA_FILE}")
    return NatsSecurity(
        user=user,
        password=password,
        creds_file=creds,
        nkey_seed_file=seed,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
    )


def nats_servers(url: str) -> list[str]:
    return [s.strip() for s in url.split(",") if s.strip()]


async def connect_nats(
    url: str,
    *,
    name: str,
    security: NatsSecurity | None = None,
    reconnect_wait: float = 1.0,
    retry: bool = True,
) -> NATS:
    """Connect (retrying with capped backoff until reachable) and reconnect forever
    afterwards; with ``retry`` off, one attempt and no reconnects (tools, tests). A
    refused authorization is retried like an unreachable server (the broker's
    configuration may be on its way) and logged as a warning."""

    async def on_error(exc: Exception) -> None:
        if "authorization" in str(exc).lower() or "permissions" in str(exc).lower():
            _log.warning("nats refused", error=str(exc))
        else:
            _log.debug("nats error", error=repr(exc))

    async def on_disconnected() -> None:
        _log.warning("nats disconnected")

    async def on_reconnected() -> None:
        _log.info("nats reconnected")

    options = (security or NatsSecurity()).connect_options()
    delay = 0.2
    while True:
        try:
            return await nats.connect(
                servers=nats_servers(url),
                name=name,
                allow_reconnect=retry,
                max_reconnect_attempts=-1 if retry else 0,
                reconnect_time_wait=reconnect_wait,
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
                **options,
            )
        except Exception as exc:
            if not retry:
                raise
            _log.warning("nats not reachable, retrying", error=repr(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def nats_settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of the NATS security settings, for the README."""
    return [
        (USER, "(unset: no user)", "NATS user name (the broker's permissions apply to it)"),
        (PASSWORD, "(unset)", "password of that user"),
        (CREDS_FILE, "(unset)", "NATS creds file (JWT and NKEY seed; needs the `nkeys` package)"),
        (NKEY_SEED_FILE, "(unset)", "NKEY seed file (needs the `nkeys` package)"),
        (
            CA_FILE,
            "(unset: plaintext unless the URL is tls://)",
            "CA of the NATS server's certificate; turns TLS on",
        ),
        (CERT_FILE, "(unset)", "client certificate for a NATS server that verifies clients"),
        (KEY_FILE, "(unset)", "private key of that certificate"),
    ]
