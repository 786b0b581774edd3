"""JSON read with the position of every key and list item, as the YAML reader keeps them.

``json.loads`` gives no positions, so a problem found in a JSON process file (a
duplicate key, an unknown key, a bad duration) could not say where it is. This reader
walks a text that ``json.loads`` accepts and builds the same values, with
``yaml.Mark`` positions (line and column, both from 0) attached through the
``new_map`` / ``new_seq`` containers (``marks``, ``duplicates``), so both formats
report ``(line L, column C)`` alike.
"""

from __future__ import annotations

import bisect
import json.scanner
import re
from collections.abc import Callable

# The string reader json.loads uses (escapes, strictness); typeshed does not declare it.
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, Protocol

from yaml.error import Mark

_SPACE = re.compile(r"[ \t\n\r]*")
_LITERALS = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": float("-inf"),
}


class MarkedMap(Protocol):
    marks: dict[Any, Mark]
    duplicates: list[tuple[Any, Mark | None]]

    def __contains__(self, key: object) -> bool: ...
    def __setitem__(self, key: Any, value: Any) -> None: ...


class MarkedSeq(Protocol):
    marks: list[Mark]

    def append(self, value: Any) -> None: ...


def load_json_with_marks(
    text: str, new_map: Callable[[], MarkedMap], new_seq: Callable[[], MarkedSeq]
) -> Any:
    """The value of the JSON ``text``; raises ``ValueError`` where it is not JSON.

    A key that comes twice keeps its first value and is listed in ``duplicates``.
    """
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def mark(index: int) -> Mark:
        line = bisect.bisect_right(line_starts, index) - 1
        return Mark("<json>", index, line, index - line_starts[line], "", 0)

    def skip(index: int) -> int:
        return _SPACE.match(text, index).end()  # type: ignore[union-attr]

    def value(index: int) -> tuple[Any, int]:
        index = skip(index)
        char = text[index : index + 1]
        if char == "{":
            return mapping(index + 1)
        if char == "[":
            return sequence(index + 1)
        if char == '"':
            string, end = scanstring(text, index + 1)
            return string, end
        for literal, result in _LITERALS.items():
            if text.startswith(literal, index):
                return result, index + len(literal)
        number = json.scanner.NUMBER_RE.match(text, index)
        if number is None:
            raise ValueError(f"not JSON at line {mark(index).line + 1}")
        whole, fraction, exponent = number.groups()
        if fraction or exponent:
            return float(whole + (fraction or "") + (exponent or "")), number.end()
        return int(whole), number.end()

    def mapping(index: int) -> tuple[Any, int]:
        result = new_map()
        index = skip(index)
        if text[index : index + 1] == "}":
            return result, index + 1
        while True:
            index = skip(index)
            if text[index : index + 1] != '"':
                raise ValueError(f"not JSON at line {mark(index).line + 1}")
            where = mark(index)
            key, index = scanstring(text, index + 1)
            index = skip(index)
            if text[index : index + 1] != ":":
                raise ValueError(f"not JSON at line {mark(index).line + 1}")
            item, index = value(index + 1)
            if key in result:
                result.duplicates.append((key, where))
            else:
                result[key] = item
                result.marks[key] = where
            index = skip(index)
            if text[index : index + 1] == ",":
                index += 1
                continue
            if text[index : index + 1] == "}":
                return result, index + 1
            raise ValueError(f"not JSON at line {mark(index).line + 1}")

    def sequence(index: int) -> tuple[Any, int]:
        result = new_seq()
        index = skip(index)
        if text[index : index + 1] == "]":
            return result, index + 1
        while True:
            start = skip(index)
            item, index = value(start)
            result.append(item)
            result.marks.append(mark(start))
            index = skip(index)
            if text[index : index + 1] == ",":
                index += 1
                continue
            if text[index : index + 1] == "]":
                return result, index + 1
            raise ValueError(f"not JSON at line {mark(index).line + 1}")

    result, end = value(0)
    if skip(end) != len(text):
        raise ValueError(f"extra data after the JSON value at line {mark(end).line + 1}")
    return result
