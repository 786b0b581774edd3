"""Settings of the approval service beyond the platform's (``load_settings``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from trinity.process.common.v1 import enums_pb2

DEFAULT_WORK_TARGET = "127.0.0.1:7404"

CHANNELS: dict[str, enums_pb2.Channel.ValueType | None] = {
    "file": enums_pb2.CHANNEL_FILE,
    "webhook": enums_pb2.CHANNEL_WEBHOOK,
    "slack": enums_pb2.CHANNEL_SLACK,
    "email": enums_pb2.CHANNEL_EMAIL,
    "none": None,
}


@dataclass(frozen=True)
class ApprovalSettings:
    work_target: str = DEFAULT_WORK_TARGET
    work_token: str = ""
    deadline_poll_interval: float = 1.0
    dispatch_poll_interval: float = 1.0
    dispatch_max_backoff: float = 30.0
    principal_channel: enums_pb2.Channel.ValueType | None = enums_pb2.CHANNEL_FILE
    principal_target: str = "approvals.jsonl"
    # Principals allowed to request and cancel approvals; empty: any caller.
    requesters: frozenset[str] = frozenset()


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
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


def load_approval_settings(env: Mapping[str, str] | None = None) -> ApprovalSettings:
    env = os.environ if env is None else env
    channel_name = (env.get("TRINITY_APPROVAL_PRINCIPAL_CHANNEL") or "file").strip().lower()
    if channel_name not in CHANNELS:
        raise ValueError(
            f"TRINITY_APPROVAL_PRINCIPAL_CHANNEL must be one of {', '.join(CHANNELS)}, "
            f"got {channel_name!r}"
        )
    return ApprovalSettings(
        work_target=env.get("TRINITY_WORK_TARGET") or DEFAULT_WORK_TARGET,
        work_token=env.get("TRINITY_APPROVAL_WORK_TOKEN", ""),
        deadline_poll_interval=_seconds(env, "TRINITY_APPROVAL_DEADLINE_POLL_INTERVAL", 1.0),
        dispatch_poll_interval=_seconds(env, "TRINITY_APPROVAL_DISPATCH_POLL_INTERVAL", 1.0),
        dispatch_max_backoff=_seconds(env, "TRINITY_APPROVAL_DISPATCH_MAX_BACKOFF", 30.0),
        principal_channel=CHANNELS[channel_name],
        principal_target=env.get("TRINITY_APPROVAL_PRINCIPAL_TARGET") or "approvals.jsonl",
        requesters=frozenset(
            p.strip().casefold()
            for p in env.get("TRINITY_APPROVAL_REQUESTERS", "").split(",")
            if p.strip()
        ),
    )
