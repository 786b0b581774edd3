"""Timer steps: durations and wall-clock times in a timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from engine_support import Driver, spec, timer

from trinity_execution.domain.timers import InvalidTimer, fire_at
from trinity_process_model.model import TimerConfig

NOW = datetime(2026, 3, 7, 15, 30, tzinfo=UTC)


def test_duration() -> None:
    assert fire_at(TimerConfig(duration=timedelta(minutes=90)), NOW) == NOW + timedelta(minutes=90)


def test_neither_fires_at_once() -> None:
    assert fire_at(TimerConfig(), NOW) == NOW


def test_time_of_day_later_today_in_the_timezone() -> None:
    # 15:30 UTC is 16:30 in Paris (winter): 18:00 local is today at 17:00 UTC
    config = TimerConfig(until="18:00", timezone="Europe/Paris")
    assert fire_at(config, NOW) == datetime(2026, 3, 7, 17, 0, tzinfo=UTC)


def test_time_of_day_already_past_is_tomorrow() -> None:
    config = TimerConfig(until="09:00:30", timezone="America/New_York")
    # 15:30 UTC is 10:30 in New York; 09:00:30 comes back on the 8th, now in EDT (UTC-4)
    assert fire_at(config, NOW) == datetime(2026, 3, 8, 13, 0, 30, tzinfo=UTC)


def test_time_in_a_dst_gap_moves_forward() -> None:
    # 2026-03-08 02:30 does not exist in New York (clocks jump 02:00 → 03:00)
    now = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # 00:00 EST
    config = TimerConfig(until="02:30", timezone="America/New_York")
    assert fire_at(config, now) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT


def test_local_iso_datetime_in_the_timezone() -> None:
    config = TimerConfig(until="2026-03-09T08:00", timezone="Asia/Tokyo")
    assert fire_at(config, NOW) == datetime(2026, 3, 8, 23, 0, tzinfo=UTC)


def test_iso_datetime_with_offset_and_in_the_past() -> None:
    assert fire_at(TimerConfig(until="2026-03-07T18:00+01:00"), NOW) == datetime(
        2026, 3, 7, 17, 0, tzinfo=UTC
    )
    assert fire_at(TimerConfig(until="2020-01-01T00:00"), NOW) == NOW


@pytest.mark.parametrize(
    ("until", "zone"), [("25:00", "UTC"), ("soon", "UTC"), ("10:00", "Mars/Olympus")]
)
def test_invalid_timers(until: str, zone: str) -> None:
    with pytest.raises(InvalidTimer):
        fire_at(TimerConfig(until=until, timezone=zone), NOW)


@pytest.mark.parametrize(
    ("until", "zone"),
    [
        # local times whose UTC instant falls outside what a datetime can hold
        ("9999-12-31T23:00:00", "America/New_York"),
        ("0001-01-01T00:30:00", "Asia/Tokyo"),
    ],
)
def test_an_instant_out_of_range_is_an_invalid_timer_not_a_crash(until: str, zone: str) -> None:
    with pytest.raises(InvalidTimer, match="out of range"):
        fire_at(TimerConfig(until=until, timezone=zone), NOW)


def test_a_duration_past_the_last_instant_is_an_invalid_timer() -> None:
    with pytest.raises(InvalidTimer, match="out of range"):
        fire_at(TimerConfig(duration=timedelta.max), NOW)


def test_invalid_timer_fails_the_step() -> None:
    d = Driver.of(spec(timer("t", until="soon")))
    d.start()
    assert d.status == "failed"
    assert d.state is not None and d.state.error is not None
    assert d.state.error.code == "INVALID_TIMER"


def test_timer_step_waits_then_completes() -> None:
    d = Driver.of(spec(timer("t", until="10:00", timezone="UTC")))
    d.start()
    started = d.timer_of("t", "step_timer")
    assert started.fire_at == datetime(2026, 1, 14, 10, 0, tzinfo=UTC)
    assert d.step_status("t") == "waiting"
    d.fire("t")
    assert d.status == "completed"
