"""Messages no step waits for yet: kept (bounded in number), refused when asked, expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import duration_pb2
from sqlalchemy import func, select

from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_execution.api.answers import ProtoPresenter
from trinity_execution.api.servicer import signal_of
from trinity_execution.application.messages import MessageDelivery, MessageSettings
from trinity_execution.infrastructure.message_store import purge_expired
from trinity_execution.infrastructure.tables import buffered_messages
from trinity_execution.infrastructure.transactions import execution_unit_of_work
from trinity_platform.db import create_engine, run_migrations
from trinity_platform.errors import InvalidArgument, NotFound, ResourceExhausted
from trinity_platform.unit_of_work import fingerprint

MIGRATIONS = Path(__file__).resolve().parents[1] / "trinity_execution" / "migrations"


def request(
    key: str, ttl_seconds: int | None = None, **payload: object
) -> api.SignalExecutionRequest:
    message = api.SignalExecutionRequest(
        request_id=key, message_name="ci-result", correlation_key="42"
    )
    message.payload.update(payload)
    if ttl_seconds is not None:
        message.time_to_live.CopyFrom(duration_pb2.Duration(seconds=ttl_seconds))
    return message


async def test_kept_messages_are_bounded_refusable_and_expire(database_url: str) -> None:
    engine = create_engine(database_url)
    await run_migrations(engine, MIGRATIONS)
    # No continuation is needed: nothing waits, so nothing is delivered.
    delivery = MessageDelivery(
        execution_unit_of_work(engine),
        None,  # type: ignore[arg-type]
        ProtoPresenter(),
        MessageSettings(max_kept=2),
    )
    try:
        for key in ("m1", "m2"):
            kept = await delivery.signal(
                signal_of(request(key, status="green")),
                fingerprint(request(key, status="green")),
            )
            assert not kept.delivered
        again = await delivery.signal(
            signal_of(request("m1", status="green")),
            fingerprint(request("m1", status="green")),
        )
        assert not again.delivered  # the same message: answered from its first answer
        with pytest.raises(ResourceExhausted) as full:
            await delivery.signal(signal_of(request("m3")), fingerprint(request("m3")))
        assert full.value.reason == "TOO_MANY_KEPT_MESSAGES"
        with pytest.raises(NotFound) as refused:
            await delivery.signal(
                signal_of(request("m4", ttl_seconds=0)),
                fingerprint(request("m4", ttl_seconds=0)),
            )
        assert refused.value.reason == "NO_MESSAGE_SUBSCRIBER"
        async with engine.begin() as conn:
            assert await purge_expired(conn, datetime.now(UTC) + timedelta(hours=2)) == 2
            assert await conn.scalar(select(func.count()).select_from(buffered_messages)) == 0
    finally:
        await engine.dispose()


def test_malformed_and_oversized_messages_are_refused_with_every_violation() -> None:
    huge = request("m", blob="x" * (300 * 1024))
    huge.message_name = "not a name!"
    huge.correlation_key = ""
    with pytest.raises(InvalidArgument) as refused:
        signal_of(huge)
    assert {v.field for v in refused.value.violations} == {
        "message_name",
        "correlation_key",
        "payload",
    }
