"""The JetStream streams, defined once (also rendered into the Kubernetes manifests).

Their limits are settings shared by every process (:class:`StreamLimits`):

* the facts streams keep facts for ``TRINITY_FACTS_MAX_AGE`` (default 30 days) and
  at most ``TRINITY_FACTS_MAX_BYTES`` each (default: no size limit); at a limit the
  oldest facts go (discard old). The databases stay the record; a subscriber that
  falls further behind than the limit replays from a projection, not the stream.
* the work queue holds at most ``TRINITY_WORK_QUEUE_MAX_MSGS`` intents (default
  100,000) and ``TRINITY_WORK_QUEUE_MAX_BYTES`` (default: no size limit), never
  expiring by age; at a limit JetStream refuses new intents (discard new), so the
  work service's relay keeps them in its outbox and publishes them as executors make
  room: backpressure into the database, nothing dropped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from trinity_platform.logs import get_logger
from trinity_platform.subjects import (
    SERVICES,
    WORK_QUEUE_PREFIX,
    WORK_QUEUE_STREAM,
    all_facts_subject,
    facts_stream,
)

_log = get_logger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0
UNLIMITED = -1


@dataclass(frozen=True)
class StreamLimits:
    facts_max_age: float = 30 * 86400.0  # seconds; 0 keeps facts forever
    facts_max_bytes: int = UNLIMITED  # per facts stream
    work_queue_max_msgs: int = 100_000
    work_queue_max_bytes: int = UNLIMITED


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    match = _AGE.match(raw)
    if match is None:
        raise ValueError(f"{name} must be a duration like 30d, 12h or 3600, got {raw!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def _limit(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer (-1: no limit), got {raw!r}") from None
    if value < 1 and value != UNLIMITED:
        raise ValueError(f"{name} must be positive or -1 (no limit), got {value}")
    return value


def stream_limits_from_env(env: Mapping[str, str] | None = None) -> StreamLimits:
    """``TRINITY_FACTS_MAX_AGE``, ``TRINITY_FACTS_MAX_BYTES``, ``TRINITY_WORK_QUEUE_MAX_MSGS``,
    ``TRINITY_WORK_QUEUE_MAX_BYTES`` (the same for every process)."""
    env = os.environ if env is None else env
    defaults = StreamLimits()
    return StreamLimits(
        facts_max_age=_age(env, "TRINITY_FACTS_MAX_AGE", defaults.facts_max_age),
        facts_max_bytes=_limit(env, "TRINITY_FACTS_MAX_BYTES", defaults.facts_max_bytes),
        work_queue_max_msgs=_limit(
            env, "TRINITY_WORK_QUEUE_MAX_MSGS", defaults.work_queue_max_msgs
        ),
        work_queue_max_bytes=_limit(
            env, "TRINITY_WORK_QUEUE_MAX_BYTES", defaults.work_queue_max_bytes
        ),
    )


def stream_configs(replicas: int = 1, limits: StreamLimits | None = None) -> list[StreamConfig]:
    """The four facts streams (limits retention, kept) and the work queue (taken once)."""
    limits = limits or StreamLimits()
    configs = [
        StreamConfig(
            name=facts_stream(service),
            description=f"Facts emitted by the {service} service",
            subjects=[all_facts_subject(service)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=limits.facts_max_age,
            max_bytes=limits.facts_max_bytes,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )
        for service in SERVICES
    ]
    configs.append(
        StreamConfig(
            name=WORK_QUEUE_STREAM,
            description="Work intents for the executors; each is taken by one consumer",
            subjects=[f"{WORK_QUEUE_PREFIX}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            discard=DiscardPolicy.NEW,  # a full queue refuses; the outbox keeps the intent
            max_msgs=limits.work_queue_max_msgs,
            max_bytes=limits.work_queue_max_bytes,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )
    )
    return configs


async def ensure_streams(
    js: Any, replicas: int = 1, limits: StreamLimits | None = None
) -> list[str]:
    """Create the streams, or update them to the code's config; returns their names.

    Safe to call from every service at every start, also concurrently.
    ``js`` is a ``nats.js.JetStreamContext``.
    """
    names = []
    for config in stream_configs(replicas, limits):
        await ensure_stream(js, config)
        assert config.name is not None
        names.append(config.name)
    return names


async def ensure_stream(js: Any, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            _log.info("stream created", stream=config.name)
            return
        except BadRequestError:  # created concurrently with a different config
            pass
    await js.update_stream(config)
