"""When a timer step fires: after a duration, or at a wall-clock time in a timezone."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from trinity_process_model.model import TimerConfig


class InvalidTimer(ValueError):
    """The timer's `until` or timezone cannot be understood."""


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def fire_at(config: TimerConfig, now: datetime) -> datetime:
    """The UTC instant the timer fires, given the current instant `now`.

    * ``duration``: now + duration.
    * ``until: "HH:MM[:SS]"``: the next occurrence of that local time (strictly after
      now) in ``timezone``; a time that does not exist on a day (DST gap) is shifted
      forward by the gap, an ambiguous one takes its first occurrence.
    * ``until: "<ISO date-time>"``: that instant; without an offset it is local time in
      ``timezone``. A past instant fires at once (now).
    * neither: now.

    An instant a datetime cannot hold (past year 9999 or before year 1, in UTC) is an
    :class:`InvalidTimer`, which fails the step; it never escapes as an OverflowError.
    """
    try:
        return _fire_at(config, now)
    except OverflowError:
        raise InvalidTimer(
            f"timer instant out of range (until={config.until!r}, duration={config.duration})"
        ) from None


def _fire_at(config: TimerConfig, now: datetime) -> datetime:
    if config.duration is not None:
        return now + config.duration
    if not config.until:
        return now
    zone = _zone(config.timezone)
    local_now = now.astimezone(zone)
    clock = _CLOCK.match(config.until.strip())
    if clock:
        hour, minute, second = (int(g or 0) for g in clock.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise InvalidTimer(f"not a time of day: {config.until!r}")
        wall = time(hour, minute, second)
        day = local_now.date()
        for _ in range(3):
            candidate = _normalize(datetime.combine(day, wall, tzinfo=zone))
            if candidate > now:
                return candidate.astimezone(UTC)
            day += timedelta(days=1)
        raise InvalidTimer(f"no next occurrence of {config.until!r}")  # pragma: no cover
    try:
        moment = datetime.fromisoformat(config.until.strip())
    except ValueError:
        raise InvalidTimer(
            f"until is neither HH:MM[:SS] nor an ISO date-time: {config.until!r}"
        ) from None
    if moment.tzinfo is None:
        moment = _normalize(moment.replace(tzinfo=zone))
    return max(moment.astimezone(UTC), now)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTimer(f"unknown timezone {name!r}") from exc


def _normalize(local: datetime) -> datetime:
    """A local wall time that does not exist (DST gap) moves forward by the gap."""
    round_trip = local.astimezone(UTC).astimezone(local.tzinfo)
    if round_trip.replace(tzinfo=None) != local.replace(tzinfo=None):
        return round_trip
    return local
