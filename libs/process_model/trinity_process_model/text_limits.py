"""Limits a process text must meet before a parser builds anything from it.

Process files arrive from anyone who can call the definition service, so reading one
must take bounded time and memory and must never crash the process. libyaml's own
composer recurses in C, one stack frame per nesting level: 50,000 nested ``{`` (250 KB)
overflow the stack and kill the process with SIGSEGV. So:

- the text's size is checked first (:data:`MAX_TEXT_CHARS`);
- JSON is pre-scanned for its bracket depth (exact: JSON strings are the only place a
  bracket can hide, and they are simple to skip);
- YAML is composed by :class:`DepthLimitedComposer`, which counts the nesting of
  libyaml's events and stops at :data:`MAX_NESTING`. libyaml's scanner and parser keep
  their state on heap stacks (no recursion), and they are driven lazily, so at most
  ``MAX_NESTING`` levels are ever read. A character pre-scan cannot do this for YAML:
  quotes, comments and block scalars decide whether a bracket counts, and a scan that
  guesses them wrong can be made to undercount.
"""

from __future__ import annotations

from typing import Any

from yaml.composer import Composer
from yaml.error import MarkedYAMLError
from yaml.events import MappingStartEvent, SequenceStartEvent

MAX_TEXT_CHARS = 1_000_000
"""Longest process text (characters); real process files are a few kilobytes."""

MAX_NESTING = 64
"""Deepest nesting of mappings and lists a process text may have (schedule input may nest
32 levels, below a handful of levels of process structure)."""


class NestingTooDeep(MarkedYAMLError):
    """The document nests deeper than :data:`MAX_NESTING`."""


def size_problem(text: str) -> str | None:
    """Why ``text`` is too large to read, or None."""
    if len(text) > MAX_TEXT_CHARS:
        return (
            f"the process text is {len(text):,} characters long; at most "
            f"{MAX_TEXT_CHARS:,} are accepted"
        )
    return None


def json_depth_problem(text: str, limit: int = MAX_NESTING) -> str | None:
    """Why the JSON ``text`` nests too deeply, or None (one pass, no parsing)."""
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return f"the document nests deeper than {limit} levels"
        elif char in "]}":
            depth -= 1
    return None


class DepthLimitedComposer(Composer):
    """PyYAML's composer (Python, event by event) with a nesting limit.

    Mixed in before libyaml's ``CParser``, it replaces the C composer, so the events
    come from libyaml and the nodes are built here, never deeper than ``MAX_NESTING``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(MappingStartEvent, SequenceStartEvent):  # type: ignore[attr-defined]
            if self._depth >= MAX_NESTING:
                event = self.peek_event()  # type: ignore[attr-defined]
                raise NestingTooDeep(
                    None,
                    None,
                    f"the document nests deeper than {MAX_NESTING} levels",
                    event.start_mark,
                )
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


__all__ = [
    "MAX_NESTING",
    "MAX_TEXT_CHARS",
    "DepthLimitedComposer",
    "NestingTooDeep",
    "json_depth_problem",
    "size_problem",
]
