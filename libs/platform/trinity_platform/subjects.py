"""NATS subject and stream names (see ARCHITECTURE.md, "Subjects, streams, envelope")."""

from __future__ import annotations

import re

SERVICES: tuple[str, ...] = ("definition", "execution", "approval", "work")

WORK_QUEUE_STREAM = "TRINITY_PROCESS_WORK_QUEUE"
WORK_QUEUE_PREFIX = "trinity.process.work.queue.v1"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _check_token(kind: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '_' or '-'")
    return value


def facts_prefix(service: str) -> str:
    """``trinity.process.<service>.facts.v1``"""
    return f"trinity.process.{_check_token('service', service)}.facts.v1"


def fact_subject(service: str, fact_name: str) -> str:
    """``trinity.process.<service>.facts.v1.<FactName>``"""
    return f"{facts_prefix(service)}.{_check_token('fact name', fact_name)}"


def all_facts_subject(service: str) -> str:
    """Wildcard matching every fact of ``service``."""
    return f"{facts_prefix(service)}.>"


def facts_stream(service: str) -> str:
    """``TRINITY_PROCESS_<SERVICE>_FACTS``"""
    return f"TRINITY_PROCESS_{_check_token('service', service).upper()}_FACTS"


def work_queue_subject(kind: str) -> str:
    """``trinity.process.work.queue.v1.<kind>``"""
    return f"{WORK_QUEUE_PREFIX}.{_check_token('work kind', kind)}"


def event_source(service: str) -> str:
    """CloudEvents ``source`` of everything a service emits."""
    return f"trinity.process/{_check_token('service', service)}"


def stream_for_subject(subject: str) -> str | None:
    """The stream that stores ``subject``, or None when it follows no known pattern."""
    parts = subject.split(".")
    if len(parts) == 6 and parts[:2] == ["trinity", "process"] and parts[4] == "v1":
        if parts[2] == "work" and parts[3] == "queue":
            return WORK_QUEUE_STREAM
        if parts[3] == "facts":
            return facts_stream(parts[2])
    return None
