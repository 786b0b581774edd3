"""Transient database failures, recognised in one place and answered as retryable.

A database that refuses connections ("sorry, too many clients already"), is
starting up or shutting down, drops a connection, or aborts a transaction for a
serialization failure or a deadlock has not said anything about the request: the
same request, retried with the same idempotency key, will succeed. So these are
never INTERNAL. :func:`transient_database_error` turns them into the error family:

* :class:`~trinity_platform.errors.Unavailable` (``DATABASE_UNAVAILABLE``): the
  database cannot serve now (connection refused, exhausted or lost, starting up,
  shutting down, SQLite locked or busy, the connection pool empty for too long);
* :class:`~trinity_platform.errors.Conflict` (an ``Aborted``, ``DATABASE_CONFLICT``):
  the transaction lost a race (serialization failure, deadlock, lock not available);
  the unit of work runs it again.

Both carry a retry delay that the gRPC edge sends as ``google.rpc.RetryInfo``.
The error-mapping interceptor applies it to every RPC; a unit of work may apply it
earlier to choose its own message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from trinity_platform.errors import Aborted, Conflict, TrinityError, Unavailable

UNAVAILABLE_RETRY_AFTER = 1.0
CONFLICT_RETRY_AFTER = 0.1

# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_CONFLICT_STATES = frozenset({"40001", "40P01", "55P03"})  # serialization, deadlock, lock
_UNAVAILABLE_STATES = frozenset(
    {
        "53000",  # insufficient_resources
        "53100",  # disk_full
        "53200",  # out_of_memory
        "53300",  # too_many_connections (also the role's or database's CONNECTION LIMIT)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: the database system is starting up
        "57P05",  # idle_session_timeout
        "58000",  # system_error
        "58030",  # io_error
    }
)
_UNAVAILABLE_CLASSES = ("08",)  # connection exception
_SQLITE_BUSY = ("database is locked", "database is busy", "database table is locked")


class DatabaseBusy(TimeoutError):
    """The database stayed busy for longer than a transaction may wait to begin."""


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, the driver errors it wraps, and their causes (each once)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        pending.extend(
            [
                current.__context__,
                current.__cause__,
                orig if isinstance(orig, BaseException) else None,
            ]
        )


def _sqlstate(error: BaseException) -> str | None:
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(error, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def classify(error: BaseException) -> type[Unavailable] | type[Aborted] | None:
    """Which retryable family ``error`` belongs to, or None when it is not transient."""
    for link in _chain(error):
        if isinstance(link, TrinityError):
            return None  # already an answer of the service
        state = _sqlstate(link)
        if state is not None:
            if state in _CONFLICT_STATES:
                return Aborted
            if state in _UNAVAILABLE_STATES or state.startswith(_UNAVAILABLE_CLASSES):
                return Unavailable
        if isinstance(link, sqlite3.OperationalError) and str(link).startswith(_SQLITE_BUSY):
            return Unavailable
        if isinstance(link, DatabaseBusy | sa_exc.TimeoutError | ConnectionError):
            return Unavailable  # our SQLite gate, the connection pool, a refused socket
        if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
            return Unavailable
        if isinstance(link, sa_exc.InterfaceError | sa_exc.DisconnectionError):
            return Unavailable
    return None


def is_transient(error: BaseException) -> bool:
    """True when ``error`` is a transient database failure (retry soon, same request)."""
    return classify(error) is not None


def transient_database_error(error: BaseException) -> TrinityError | None:
    """The retryable answer for a transient database failure; None for anything else."""
    family = classify(error)
    if family is Aborted:
        return Conflict(
            "the transaction conflicted with a concurrent one; retry",
            reason="DATABASE_CONFLICT",
            metadata={"error": type(error).__name__},
            retry_after=CONFLICT_RETRY_AFTER,
        )
    if family is Unavailable:
        return Unavailable(
            "the database is unavailable; retry shortly",
            reason="DATABASE_UNAVAILABLE",
            metadata={"error": type(error).__name__},
            retry_after=UNAVAILABLE_RETRY_AFTER,
        )
    return None


__all__ = ["DatabaseBusy", "classify", "is_transient", "transient_database_error"]
