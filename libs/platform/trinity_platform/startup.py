"""Start-up phases with their durations, so a slow start says where its time went.

Every service (through :class:`~trinity_platform.runtime.ServiceRuntime`) and every
executor logs one ``start phase`` line per phase as it ends, then one ``started``
line with all of them. The first phase, ``imports``, runs from the moment the
operating system started the process (read from ``/proc``, so the interpreter's own
start and every import count) until the component was constructed; a start that
stays silent for seconds before its first log line shows up there.
"""

from __future__ import annotations

import os
import time
from typing import Any

from trinity_platform.logs import get_logger

_log = get_logger(__name__)


def process_age() -> float | None:
    """Seconds since the operating system started this process (None where unknown)."""
    try:
        with open("/proc/self/stat") as stat_file:
            stat = stat_file.read()
        with open("/proc/uptime") as uptime_file:
            uptime = float(uptime_file.read().split()[0])
        # Fields after the command name (which may hold spaces) start at field 3.
        fields = stat.rsplit(")", 1)[1].split()
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - started_after_boot, 0.0)


class StartupPhases:
    """``mark(name)`` ends the phase ``name`` (begun where the previous one ended)."""

    def __init__(self, component: str, **context: Any) -> None:
        now = time.monotonic()
        age = process_age()
        self._process_start = now - (age if age is not None else 0.0)
        self._last = self._process_start
        self.component = component
        self._context = context
        self.phases: dict[str, float] = {}
        self._deferred: list[dict[str, Any]] = []

    def mark(self, name: str, *, defer: bool = False, **fields: Any) -> float:
        """End the phase ``name``; returns its duration in seconds. It is logged now,
        or with ``defer`` (logging is not configured yet) at the next ``mark``."""
        now = time.monotonic()
        duration = now - self._last
        self._last = now
        self.phases[name] = self.phases.get(name, 0.0) + duration
        self._deferred.append(
            {
                "phase": name,
                "seconds": round(duration, 3),
                "since_process_start": round(now - self._process_start, 3),
                **fields,
            }
        )
        if not defer:
            deferred, self._deferred = self._deferred, []
            for entry in deferred:
                _log.info("start phase", component=self.component, **self._context, **entry)
        return duration

    def ready(self, **fields: Any) -> None:
        """Log the whole start: total, slowest phase and every phase's seconds."""
        total = time.monotonic() - self._process_start
        slowest = max(self.phases, key=self.phases.__getitem__, default="")
        _log.info(
            "started",
            component=self.component,
            seconds=round(total, 3),
            slowest_phase=slowest,
            phases={name: round(seconds, 3) for name, seconds in self.phases.items()},
            **self._context,
            **fields,
        )


__all__ = ["StartupPhases", "process_age"]
