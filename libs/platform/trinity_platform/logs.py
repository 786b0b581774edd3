"""structlog setup shared by the services: JSON lines when not on a terminal.

Nothing secret reaches a log line: every event passes :func:`redact_secrets` last,
which masks the credentials of URLs (``nats://user:***@host``) and every value
registered with :func:`register_secrets`. :func:`configure_logging` registers the
secrets of the environment: the values of ``TRINITY_*`` settings named like a token,
key, password or secret (the tokens of ``TRINITY_AUTH_TOKENS``), and the passwords in
every URL setting.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from opentelemetry import trace

QUIET_LOGGERS = ("aiosqlite", "asyncio")

REDACTED = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/@'\"]+)@")
_SECRET_SETTING = re.compile(r"^TRINITY_\w*(TOKEN|TOKENS|PASSWORD|SECRET|SECRETS|KEY|KEYS)$")
_LIST_SETTING = re.compile(r"(TOKENS|KEYS|_TOKEN_KEY)$")  # comma-separated lists of secrets
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary text
_secrets: set[str] = set()


_TOKEN_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def _is_token_scheme(scheme: str) -> bool:
    """NATS URLs carry a token as a lone user name; other URLs a user name."""
    return scheme.lower().endswith(_TOKEN_SCHEMES)


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it masked: ``user:pass@`` becomes
    ``user:***@`` and a NATS token (``nats://token@host``) becomes ``***@``."""

    def mask(match: re.Match[str]) -> str:
        user, colon, _password = match["userinfo"].partition(":")
        if colon:
            return f"{match['scheme']}{user}:{REDACTED}@"
        if _is_token_scheme(match["scheme"]):
            return f"{match['scheme']}{REDACTED}@"
        return match[0]  # a user name alone (postgresql://postgres@db) is no secret

    return _URL_USERINFO.sub(mask, text)


def register_secrets(*values: str) -> None:
    """Mask these values wherever they appear in a log line from now on."""
    _secrets.update(v for v in values if v and len(v) >= _MIN_SECRET_LENGTH)


def secrets_of_environment(env: Mapping[str, str]) -> list[str]:
    """The secret values among ``TRINITY_*`` settings (see the module docstring)."""
    found: list[str] = []
    for name, value in env.items():
        if not name.startswith("TRINITY_") or not value:
            continue
        if _SECRET_SETTING.match(name):
            # The whole value (a password may hold commas), and the items of
            # "token=principal,…" lists and comma-separated key rotations.
            found.append(value)
            if _LIST_SETTING.search(name):
                found += [item.partition("=")[0].strip() for item in value.split(",")]
        for match in _URL_USERINFO.finditer(value):
            user, colon, password = match["userinfo"].partition(":")
            if colon:
                found.append(password)
            elif _is_token_scheme(match["scheme"]):  # nats://<token>@host
                found.append(user)
    return list(dict.fromkeys(s for s in found if s))


def _redact(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    text = value if isinstance(value, str) else repr(value)
    text = redact_url(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_secrets(_logger: Any, _name: str, event_dict: Any) -> Any:
    """structlog processor: mask URL credentials and registered secrets in every value."""
    return {key: _redact(value) for key, value in event_dict.items()}


def configure_logging(level: str = "INFO", *, json: bool | None = None) -> None:
    """Route structlog and the standard ``logging`` module to stderr at ``level``, with
    the environment's secrets masked."""
    register_secrets(*secrets_of_environment(os.environ))
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    if json is None:
        json = not sys.stderr.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # as text, so that it is redacted too
            redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:  # they log every statement with its parameters at DEBUG
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))


def add_trace_id(_logger: Any, _name: str, event_dict: Any) -> Any:
    """The id of the trace being recorded, if any (tracing off: nothing, at the cost of
    one context-variable read)."""
    if "trace_id" not in event_dict:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            event_dict["trace_id"] = format(context.trace_id, "032x")
    return event_dict


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name`` (works before and after configuration)."""
    return structlog.get_logger(name)
