"""The JetStream streams, defined once (also rendered into the Kubernetes manifests)."""

from __future__ import annotations

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


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    """The four facts streams (limits retention, kept) and the work queue (taken once)."""
    configs = [
        StreamConfig(
            name=facts_stream(service),
            description=f"Facts emitted by the {service} service",
            subjects=[all_facts_subject(service)],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
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
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            num_replicas=replicas,
        )
    )
    return configs


async def ensure_streams(js: Any, replicas: int = 1) -> list[str]:
    """Create the streams, or update them to the code's config; returns their names.

    Safe to call from every service at every start, also concurrently.
    ``js`` is a ``nats.js.JetStreamContext``.
    """
    names = []
    for config in stream_configs(replicas):
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
