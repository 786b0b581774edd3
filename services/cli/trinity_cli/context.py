"""What every command receives: its arguments, the service clients and the output mode."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from google.protobuf.message import Message

from trinity_cli.client import Clients
from trinity_cli.render import print_json, to_dict


@dataclass
class Context:
    args: argparse.Namespace
    clients: Clients
    nats_url: str
    output: str = "text"
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def json(self) -> bool:
        return self.output == "json"

    def print(self, *parts: object) -> None:
        print(*parts, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """A hint for people: on stderr, so stdout stays clean for pipes and JSON."""
        print(text, file=self.err, flush=True)

    def emit(self, value: Message | dict[str, Any], *, lines: bool = False) -> None:
        print_json(to_dict(value) if isinstance(value, Message) else value, self.out, lines=lines)


Command = Callable[[Context], int]


def all_pages(
    fetch: Callable[[str, int], Any], items: str, limit: int, page_size: int = 200
) -> Iterator[Any]:
    """Items of a paginated list call, at most ``limit`` (0: no limit).

    ``fetch(page_token, page_size)`` returns a response with ``items`` and ``next_page_token``.
    """
    token = ""
    seen = 0
    while True:
        size = min(page_size, limit - seen) if limit else page_size
        response = fetch(token, size)
        for item in getattr(response, items):
            yield item
            seen += 1
            if limit and seen >= limit:
                return
        token = response.next_page_token
        if not token:
            return
