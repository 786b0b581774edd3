"""Fire-time rules of schedule triggers and the input of event triggers (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trinity_execution.infrastructure.trigger_store import SCHEDULE, TriggerRow
from trinity_execution.loops.event_triggers import event_input
from trinity_execution.loops.schedules import (
    MissedFires,
    fire_times,
    next_fire_time,
)

GRACE = timedelta(minutes=1)


def schedule(cron: str, next_fire_at: datetime, timezone: str = "UTC") -> TriggerRow:
    return TriggerRow(
        definition_id="def-1",
        position=0,
        process_name="report",
        process_version="1.0",
        kind=SCHEDULE,
        cron=cron,
        timezone=timezone,
        next_fire_at=next_fire_at,
    )


def test_next_fire_time_is_evaluated_in_the_schedules_timezone() -> None:
    after = datetime(2026, 11, 22, 7, 30, tzinfo=UTC)  # 08:30 in Berlin (CET)
    fire = next_fire_time("0 9 * * *", "Europe/Berlin", after)
    assert fire == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_next_fire_time_is_strictly_after() -> None:
    at = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    assert next_fire_time("0 9 * * *", "UTC", at) == at + timedelta(days=1)


def test_naive_times_from_sqlite_are_taken_as_utc() -> None:
    naive = datetime(2026, 11, 22, 9, 0)
    assert next_fire_time("0 * * * *", "UTC", naive) == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def test_a_due_fire_time_fires_once_and_the_schedule_moves_on() -> None:
    now = datetime(2026, 11, 22, 9, 0, 30, tzinfo=UTC)
    due = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    times, following = fire_times(schedule("* * * * *", due), now, MissedFires.ONCE, GRACE)
    assert times == [due]
    assert following == datetime(2026, 11, 22, 9, 1, tzinfo=UTC)


def test_missed_fire_times_fire_once_on_recovery_by_default() -> None:
    now = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
    due = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)  # down for three hours
    times, following = fire_times(schedule("0 * * * *", due), now, MissedFires.ONCE, GRACE)
    assert times == [due]
    assert following == datetime(2026, 11, 22, 13, 0, tzinfo=UTC)


def test_missed_fire_times_can_all_be_fired() -> None:
    now = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
    due = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    times, following = fire_times(schedule("0 * * * *", due), now, MissedFires.ALL, GRACE)
    assert times == [due + timedelta(hours=h) for h in range(4)]
    assert following == datetime(2026, 11, 22, 13, 0, tzinfo=UTC)


def test_missed_fire_times_can_be_skipped_but_a_just_due_one_still_fires() -> None:
    due = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
    late = datetime(2026, 11, 22, 12, 0, 30, tzinfo=UTC)
    assert fire_times(schedule("0 * * * *", due), late, MissedFires.SKIP, GRACE)[0] == []
    on_time = due + timedelta(seconds=2)
    assert fire_times(schedule("0 * * * *", due), on_time, MissedFires.SKIP, GRACE)[0] == [due]


def test_event_input_takes_a_json_object_and_wraps_anything_else() -> None:
    assert event_input(b'{"order": 7}') == {"order": 7}
    assert event_input(b"[1, 2]") == {"data": [1, 2]}
    assert event_input(b"plain text") == {"data": "plain text"}
    assert event_input(b"") == {}
