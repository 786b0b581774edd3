"""Durations as authors write them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinity_process_model.durations import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w2d", timedelta(days=9)),
        ("250ms", timedelta(milliseconds=250)),
        ("1s500ms", timedelta(seconds=1, milliseconds=500)),
        ("7us", timedelta(microseconds=7)),
        ("7µs", timedelta(microseconds=7)),
        ("1.5h", timedelta(minutes=90)),
        ("0s", timedelta(0)),
        ("-5m", timedelta(minutes=-5)),
        ("  10M ", timedelta(minutes=10)),
        ("PT5M", timedelta(minutes=5)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P2D", timedelta(days=2)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P1W", timedelta(weeks=1)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0,25S", timedelta(milliseconds=250)),
        ("-PT1S", timedelta(seconds=-1)),
        ("pt5m", timedelta(minutes=5)),
    ],
)
def test_parses(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-", "bad duration"),
        ("5", "bad duration"),
        ("5 minutes", "bad duration"),
        ("5x", "bad duration"),
        ("m", "bad duration"),
        ("30m1h", "largest first"),
        ("1m1m", "largest first"),
        ("1.5.5s", "bad duration"),
        ("P", "ISO 8601"),
        ("PT", "ISO 8601"),
        ("P1DT", "ISO 8601"),
        ("P1Y", "ISO 8601"),
        ("P1M", "ISO 8601"),
        ("PT1H5", "ISO 8601"),
        ("0.5us", "finer than a microsecond"),
        ("PT0.0000001S", "finer than a microsecond"),
        ("99999999999d", "too long"),
    ],
)
def test_refuses(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2), "2d"),
        (timedelta(weeks=1), "7d"),
        (timedelta(milliseconds=1500), "1s500ms"),
        (timedelta(microseconds=1), "1us"),
        (timedelta(minutes=-5), "-5m"),
        (MAX_DURATION, "3652500d"),
    ],
)
def test_formats(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@settings(max_examples=300)
@given(st.timedeltas())
def test_format_then_parse_is_identity(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value
