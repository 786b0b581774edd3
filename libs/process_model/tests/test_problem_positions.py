"""Parse problems say where they are, in YAML and JSON alike, and come in file order."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinity_process_model.authoring import AuthoringError, parse_process
from trinity_process_model.json_marks import load_json_with_marks

FORMAT = Path(__file__).resolve().parents[1] / "FORMAT.md"

# The file behind the "Problems" example of FORMAT.md: four problems, on lines 4, 5, 7
# and 8, which the reader meets in another order (budget first, a step's timeout
# before its kind).
PROBLEMS_EXAMPLE = """\
name: broken
steps:
  - id: research
    agent_task: {agent: x, mesage: "hello"}
    timeout: soon
  - id: announce
    notification: {channel: pigeon, target: x, message: hi}
budget: {limit: 5 dollars}
"""


def refusal(text: str) -> str:
    with pytest.raises(AuthoringError) as refused:
        parse_process(text)
    return str(refused.value)


def test_problems_come_in_file_order_as_format_md_shows_them() -> None:
    documented = FORMAT.read_text().split("## Problems", 1)[1]
    block = re.search(r"```\n(.*?)```", documented, re.S)
    assert block is not None
    assert refusal(PROBLEMS_EXAMPLE) == block.group(1).rstrip("\n")


def test_a_duplicate_key_in_json_says_where_it_is() -> None:
    text = '{\n  "name": "p",\n  "steps": [{"id": "a", "timer": {"duration": "1m"}}],\n  "name": "q"\n}\n'
    said = refusal(text)
    assert "name: duplicate key 'name' (line 4, column 3)" in said


def test_json_problems_carry_line_and_column_and_come_in_file_order() -> None:
    text = (
        "{\n"
        '  "budget": {"limit": "5 dollars"},\n'
        '  "name": "p",\n'
        '  "steps": [\n'
        '    {"id": "a", "timer": {"duration": "soon"}}\n'
        "  ]\n"
        "}\n"
    )
    lines = refusal(text).splitlines()[1:]
    assert lines[0].startswith("  budget.limit: bad money") and lines[0].endswith(
        "(line 2, column 14)"
    )
    assert lines[1].startswith("  steps[0].timer.duration: bad duration") and lines[1].endswith(
        "(line 5, column 27)"
    )


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


class _Map(dict[Any, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[Any, Any] = {}
        self.duplicates: list[Any] = []


class _Seq(list[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[Any] = []


@given(json_values, st.sampled_from([None, 2]))
def test_the_positional_reader_reads_what_json_loads_reads(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert load_json_with_marks(text, _Map, _Seq) == json.loads(text)


def test_the_positional_reader_takes_what_json_loads_takes_and_refuses_the_rest() -> None:
    read = load_json_with_marks('[NaN, -Infinity, 1e2, -0, "\\u00e9"]', _Map, _Seq)
    assert math.isnan(read[0]) and read[1:] == [-math.inf, 100.0, 0, "é"]
    for broken in ('{"a" 1}', "[1,]", '{"a": 1} x', "[1 2]", "{'a': 1}", ""):
        with pytest.raises(ValueError):
            load_json_with_marks(broken, _Map, _Seq)
