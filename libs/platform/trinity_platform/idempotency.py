"""Idempotent commands: a retried request returns the first result (invariant 2).

``lookup``, ``remember`` and ``remember_if_new`` are the storage of the pattern; the
unit of work (:mod:`trinity_platform.sql_unit_of_work`) is the pattern: it remembers in
the transaction of the command, only for a command that succeeded (a request that
failed may be retried and run again), and looks up where the key may be known. The
fingerprint is :func:`trinity_platform.unit_of_work.fingerprint`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Insert, bindparam, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform.db import IDEMPOTENCY
from trinity_platform.errors import FailedPrecondition, FieldViolation, InvalidArgument
from trinity_platform.statements import PerDialect

KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
MAX_KEY_LENGTH = 255  # the idempotency.key column

# Built once: every command looks up and remembers (see trinity_platform.statements).
_LOOKUP = select(IDEMPOTENCY.c.request_fingerprint, IDEMPOTENCY.c.response).where(
    IDEMPOTENCY.c.scope == bindparam("scope"), IDEMPOTENCY.c.key == bindparam("key")
)
_REMEMBER = insert(IDEMPOTENCY)


def _remember_if_new(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(IDEMPOTENCY).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(IDEMPOTENCY).on_conflict_do_nothing()
    raise NotImplementedError(f"idempotency does not support {dialect}")  # pragma: no cover


_REMEMBER_IF_NEW = PerDialect(_remember_if_new)


def check_key(key: str) -> None:
    """Raises ``InvalidArgument`` for a key longer than the column holds (PostgreSQL
    refuses it; SQLite would silently keep it)."""
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"request_id is {len(key)} characters long; at most {MAX_KEY_LENGTH} are accepted",
            [FieldViolation("request_id", f"must be at most {MAX_KEY_LENGTH} characters")],
        )


async def lookup(
    conn: AsyncConnection, scope: str, key: str, fingerprint: str, earlier: Sequence[str] = ()
) -> bytes | None:
    """The remembered response for ``(scope, key)``, or None.

    Raises ``FailedPrecondition(reason="IDEMPOTENCY_KEY_REUSED")`` when the key was
    used before with a different request (neither ``fingerprint`` nor one of the
    ``earlier`` fingerprints of the same request), and ``InvalidArgument`` for a key
    longer than the column holds (:func:`check_key`).
    """
    check_key(key)
    row = (await conn.execute(_LOOKUP, {"scope": scope, "key": key})).first()
    if row is None:
        return None
    if row.request_fingerprint != fingerprint and row.request_fingerprint not in earlier:
        raise FailedPrecondition(
            f"idempotency key {key!r} was already used with a different request",
            reason=KEY_REUSED,
            metadata={"scope": scope, "key": key},
        )
    return bytes(row.response)


async def remember(
    conn: AsyncConnection, scope: str, key: str, fingerprint: str, response: bytes
) -> None:
    """Store the response; raises ``IntegrityError`` if a concurrent request stored first."""
    await conn.execute(_REMEMBER, _row(scope, key, fingerprint, response))


async def remember_if_new(
    conn: AsyncConnection, scope: str, key: str, fingerprint: str, response: bytes
) -> bool:
    """Store the response unless ``(scope, key)`` is remembered already (False then;
    on PostgreSQL after waiting for a concurrent transaction that stores it)."""
    result = await conn.execute(_REMEMBER_IF_NEW(conn), _row(scope, key, fingerprint, response))
    return bool(result.rowcount)


def _row(scope: str, key: str, fingerprint: str, response: bytes) -> dict[str, object]:
    return {
        "scope": scope,
        "key": key,
        "request_fingerprint": fingerprint,
        "response": response,
        "created_at": datetime.now(UTC),
    }


async def prune_idempotency(engine: AsyncEngine, older_than: timedelta) -> int:
    """Forget keys remembered before ``now - older_than``."""
    cutoff = datetime.now(UTC) - older_than
    async with engine.begin() as conn:
        result = await conn.execute(delete(IDEMPOTENCY).where(IDEMPOTENCY.c.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
