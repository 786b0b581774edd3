"""Idempotent commands: a retried request returns the first result (invariant 2).

``lookup`` and ``remember`` are the storage of the pattern, used by the unit of work
(:mod:`trinity_platform.sql_unit_of_work`), which remembers a reference to the result.
``run_idempotent`` (remembering the serialized response) is the older whole pattern,
kept for the execution service until it moves to the unit of work. Only successful results are
remembered: a request that failed may be retried and run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trinity_platform.db import IDEMPOTENCY
from trinity_platform.errors import Aborted, FailedPrecondition, FieldViolation, InvalidArgument
from trinity_platform.unit_of_work import fingerprint

R = TypeVar("R", bound=Message)

KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
MAX_KEY_LENGTH = 255  # the idempotency.key column


def request_fingerprint(request: Message, key_field: str = "request_id") -> str:
    """The one :func:`~trinity_platform.unit_of_work.fingerprint`, of a request message."""
    return fingerprint(request, without=(key_field,) if key_field else ())


async def lookup(conn: AsyncConnection, scope: str, key: str, fingerprint: str) -> bytes | None:
    """The remembered response for ``(scope, key)``, or None.

    Raises ``FailedPrecondition(reason="IDEMPOTENCY_KEY_REUSED")`` when the key was
    used before with a different request, and ``InvalidArgument`` for a key longer than
    the column holds (PostgreSQL refuses it; SQLite would silently keep it).
    """
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"request_id is {len(key)} characters long; at most {MAX_KEY_LENGTH} are accepted",
            [FieldViolation("request_id", f"must be at most {MAX_KEY_LENGTH} characters")],
        )
    row = (
        await conn.execute(
            select(IDEMPOTENCY.c.request_fingerprint, IDEMPOTENCY.c.response).where(
                IDEMPOTENCY.c.scope == scope, IDEMPOTENCY.c.key == key
            )
        )
    ).first()
    if row is None:
        return None
    if row.request_fingerprint != fingerprint:
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
    await conn.execute(
        insert(IDEMPOTENCY).values(
            scope=scope,
            key=key,
            request_fingerprint=fingerprint,
            response=response,
            created_at=datetime.now(UTC),
        )
    )


async def run_idempotent(
    engine: AsyncEngine,
    scope: str,
    key: str,
    request: Message,
    work: Callable[[AsyncConnection], Awaitable[R]],
    response_type: type[R],
    *,
    key_field: str = "request_id",
    after_commit: Callable[[], None] | None = None,
) -> R:
    """lookup → ``work(conn)`` → remember, in ONE transaction.

    ``scope`` names the operation (e.g. ``"work.RequestWork"``); an empty ``key``
    means "not idempotent": ``work`` just runs in a transaction. When two first
    requests with one key race, the loser's transaction fails on the unique key
    (or with ``Aborted`` on the aggregate's version), rolls back with its effects
    and is answered from the winner's response.
    ``after_commit`` (e.g. ``OutboxSignal.notify``) runs after a commit that ran ``work``.
    """
    if not key:
        async with engine.begin() as conn:
            response = await work(conn)
        if after_commit is not None:
            after_commit()
        return response
    fingerprint = request_fingerprint(request, key_field)
    for attempt in range(2):
        try:
            async with engine.begin() as conn:
                cached = await lookup(conn, scope, key, fingerprint)
                if cached is not None:
                    return response_type.FromString(cached)
                response = await work(conn)
                await remember(
                    conn, scope, key, fingerprint, response.SerializeToString(deterministic=True)
                )
        except (IntegrityError, Aborted) as exc:
            # Did a concurrent request with the same key win? Then answer with its result.
            async with engine.begin() as conn:
                cached = await lookup(conn, scope, key, fingerprint)
            if cached is not None:
                return response_type.FromString(cached)
            if attempt == 1 or isinstance(exc, Aborted):
                raise
            continue
        if after_commit is not None:
            after_commit()
        return response
    raise AssertionError("unreachable")  # pragma: no cover


async def prune_idempotency(engine: AsyncEngine, older_than: timedelta) -> int:
    """Forget keys remembered before ``now - older_than``."""
    cutoff = datetime.now(UTC) - older_than
    async with engine.begin() as conn:
        result = await conn.execute(delete(IDEMPOTENCY).where(IDEMPOTENCY.c.created_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
