"""Lease and delivery rules: how long work may run and how often it is offered."""

from __future__ import annotations

from datetime import timedelta

DEFAULT_TIMEOUT = timedelta(minutes=10)
MAX_TIMEOUT = timedelta(days=1)
DEFAULT_MAX_DELIVERIES = 3
MAX_DELIVERIES = 100
DEFAULT_LEASE = timedelta(seconds=30)
MIN_LEASE = timedelta(milliseconds=50)
MAX_LEASE = timedelta(hours=1)


def lease_duration(requested: timedelta | None) -> timedelta:
    """The lease to grant: the default when none was asked; otherwise clamped to the bounds."""
    if requested is None or requested <= timedelta(0):
        return DEFAULT_LEASE
    return min(max(requested, MIN_LEASE), MAX_LEASE)
