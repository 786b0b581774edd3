"""Durations as authors write them: "30s", "5m", "1h30m", "2d", or ISO 8601 "PT5M".

`parse_duration` and `format_duration` are inverse: ``parse_duration(format_duration(d)) == d``
for every ``timedelta``. Only the standard library here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

__all__ = ["MAX_DURATION", "format_duration", "parse_duration"]

MAX_DURATION = timedelta(seconds=315_576_000_000)
"""The longest duration the contract carries (google.protobuf.Duration: 10,000 years)."""

_MICROS = {
    "w": 7 * 86_400_000_000,
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
    "us": 1,
    "µs": 1,
}
_ORDER = ("w", "d", "h", "m", "s", "ms", "us")
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|us|µs|w|d|h|m|s)(?![a-z])", re.IGNORECASE)
_ISO = re.compile(
    r"(?P<sign>[-+])?P(?:(?P<w>\d+(?:[.,]\d+)?)W)?(?:(?P<d>\d+(?:[.,]\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:[.,]\d+)?)H)?(?:(?P<m>\d+(?:[.,]\d+)?)M)?(?:(?P<s>\d+(?:[.,]\d+)?)S)?)?",
    re.IGNORECASE,
)
_HINT = 'write a duration like "30s", "5m", "1h30m", "2d", "250ms" or ISO 8601 "PT5M"'


def parse_duration(text: str) -> timedelta:
    """The duration `text` names; ValueError with a readable reason otherwise.

    Units: w, d, h, m, s, ms, us (µs), largest first, each at most once, decimals
    allowed ("1.5h"); an optional leading "-". ISO 8601 durations without years and
    months ("PT1H30M", "P2D", "P1W") are accepted too. Microseconds are the finest unit.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty duration; {_HINT}")
    body = stripped
    negative = False
    if body[0] in "+-":
        negative = body[0] == "-"
        body = body[1:].lstrip()
        if not body:
            raise ValueError(f"bad duration {text!r}; {_HINT}")
    if body[:1] in ("P", "p"):
        micros = _parse_iso(stripped)
    else:
        micros = _parse_compact(body, stripped)
        if negative:
            micros = -micros
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def _parse_compact(body: str, original: str) -> int:
    position = 0
    total = Decimal(0)
    last_rank = -1
    while position < len(body):
        match = _PART.match(body, position)
        if match is None:
            raise ValueError(f"bad duration {original!r}; {_HINT}")
        unit = match.group(2).lower()
        rank = _ORDER.index("us" if unit == "µs" else unit)
        if rank <= last_rank:
            raise ValueError(
                f"bad duration {original!r}: give units largest first, each once (like '1h30m')"
            )
        last_rank = rank
        total += Decimal(match.group(1)) * _MICROS[unit]
        position = match.end()
    return _exact_micros(total, original)


def _parse_iso(text: str) -> int:
    match = _ISO.fullmatch(text)
    parts = {k: v for k, v in match.groupdict().items() if v and k != "sign"} if match else {}
    if match is None or not parts or text.upper().endswith("T"):
        raise ValueError(
            f"bad ISO 8601 duration {text!r}: use weeks, days, hours, minutes and seconds, "
            'like "PT1H30M" or "P2D" (no years or months)'
        )
    total = Decimal(0)
    for unit, value in parts.items():
        try:
            total += Decimal(value.replace(",", ".")) * _MICROS[unit.lower()]
        except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
            raise ValueError(f"bad ISO 8601 duration {text!r}") from None
    micros = _exact_micros(total, text)
    return -micros if match.group("sign") == "-" else micros


def _exact_micros(total: Decimal, text: str) -> int:
    if total != total.to_integral_value():
        raise ValueError(f"duration {text!r} is finer than a microsecond")
    return int(total)


def format_duration(value: timedelta) -> str:
    """The shortest compact form: "1h30m", "2d", "250ms", "0s", "-5m"."""
    micros = value // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    rest = abs(micros)
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms", "us"):
        count, rest = divmod(rest, _MICROS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
