"""A for_each step's state, split so that one item costs the same with 10 items or 1,000.

The *hot* part (counters, the items running, retries) is small and is written back with
the execution on every decision. The *cold* part — the list of items and the ended
items' results — can be large; it lives apart (the store keeps one row per item,
written once when the step starts and once when the item ends), and a decision holds
only what it may need of it:

- ``items``: the items from ``next`` on, ``window`` of them, and those waiting for a
  retry (``wanted_items``);
- ``results``: every ended item's result, only when the step may complete in this
  decision (``wants_results``).

When a decision finds it lacks one (a run of items whose templates fail, beyond the
window), it asks for everything with a timer (``load``): the next decision gets it all.
In memory (tests, the benchmark) nothing is ever missing: the cold part stays whole.

``ResultLog`` is append-only and shared between copies of the state, so copying the
state for a decision and ending one item is O(1) whatever the number of items.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trinity_process_model.model import Money

Result = tuple[int, Any, bool]
"""(item index, output, failed) of an ended item."""


class ResultLog:
    """An append-only list of results shared by the copies of a state: a copy sees the
    entries up to its own length; appending past another copy's entries branches."""

    __slots__ = ("_entries", "_size")

    def __init__(self, entries: list[Result] | None = None) -> None:
        self._entries: list[Result] = entries if entries is not None else []
        self._size = len(self._entries)

    def append(self, entry: Result) -> None:
        if len(self._entries) != self._size:  # another copy appended: branch off
            self._entries = self._entries[: self._size]
        self._entries.append(entry)
        self._size += 1

    def copy(self) -> ResultLog:
        clone = ResultLog.__new__(ResultLog)
        clone._entries, clone._size = self._entries, self._size
        return clone

    def since(self, start: int) -> list[Result]:
        return self._entries[start : self._size]

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Result]:
        return iter(self._entries[: self._size])


@dataclass(slots=True)
class ForEachState:
    """Hot: ``request`` (the step attempt's key), ``total`` items, ``window`` (items
    held ahead of ``next``), ``next`` to start, ``running`` (an outstanding request,
    or waiting for a retry), per-item ``attempts`` of retried items, ``backoff``
    (waiting for their retry timer), ``held`` (retries held while paused), ``ended``
    and ``failed`` counts, the ``cost`` so far, ``loads`` (full loads asked for).
    Cold: ``items`` and ``results`` as described in the module docstring."""

    request: str
    total: int
    window: int
    next: int = 0
    running: list[int] = field(default_factory=list)
    attempts: dict[int, int] = field(default_factory=dict)
    backoff: list[int] = field(default_factory=list)
    held: list[int] = field(default_factory=list)
    ended: int = 0
    failed: int = 0
    cost: Money | None = None
    loads: int = 0
    wants_all: bool = False
    """Asked for a full load (see ``load``): the next decision gets every item and result."""
    items: Mapping[int, Any] = field(default_factory=dict)
    results: ResultLog = field(default_factory=ResultLog)
    results_complete: bool = True
    """Whether ``results`` holds every ended item (not only those ended since the load)."""
    saved_items: bool = True
    """Whether the store has the items (False: this decision started the step)."""
    saved_results: int = 0
    """How many entries of ``results`` the store has already."""

    @classmethod
    def started(cls, request: str, items: list[Any], window: int) -> ForEachState:
        return cls(request, len(items), window, items=dict(enumerate(items)), saved_items=False)

    def clone(self) -> ForEachState:
        return ForEachState(
            self.request,
            self.total,
            self.window,
            self.next,
            list(self.running),
            dict(self.attempts),
            list(self.backoff),
            list(self.held),
            self.ended,
            self.failed,
            self.cost,
            self.loads,
            self.wants_all,
            self.items,  # never changed once loaded: shared
            self.results.copy(),
            self.results_complete,
            self.saved_items,
            self.saved_results,
        )

    def end(self, index: int, output: Any, failed: bool) -> None:
        self.results.append((index, output, failed))
        self.ended += 1
        self.failed += int(failed)

    def outputs(self) -> list[Any] | None:
        """Every item's output in item order (None for a failed one); None when the
        results are not all held (see ``wants_results``)."""
        if not self.results_complete:
            return None
        outputs: list[Any] = [None] * self.total
        for index, output, _failed in self.results:
            outputs[index] = output
        return outputs

    # -------------------------------------------------------------- what to load

    def wanted_items(self) -> list[int]:
        """The items a decision may send: the next ``window``, and the retried ones."""
        ahead = range(self.next, min(self.total, self.next + self.window))
        return sorted({*ahead, *self.backoff, *self.held})

    def wants_results(self) -> bool:
        """Whether the step may complete in the next decision: at most one item still
        outstanding (besides retries held, all sent on a resume) and few left to start."""
        return self.wants_all or (
            len(self.running) - len(self.held) <= 1 and self.total - self.next <= self.window
        )

    def unsaved_results(self) -> list[Result]:
        return self.results.since(self.saved_results)

    # ------------------------------------------------------------ compact form

    def to_dict(self) -> dict[str, Any]:
        """The hot part (the cold part is the store's: ``items``, ``unsaved_results``)."""
        data: dict[str, Any] = {
            "request": self.request,
            "total": self.total,
            "window": self.window,
            "next": self.next,
        }
        if self.running:
            data["running"] = list(self.running)
        if self.attempts:
            data["attempts"] = [[i, n] for i, n in self.attempts.items()]
        for name in ("backoff", "held"):
            if getattr(self, name):
                data[name] = list(getattr(self, name))
        for name in ("ended", "failed", "loads"):
            if getattr(self, name):
                data[name] = getattr(self, name)
        if self.cost is not None:
            data["cost"] = money_out(self.cost)
        if self.wants_all:
            data["wants_all"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], request: str = "") -> ForEachState:
        """The state from its hot part and what the store loaded of the cold part beside
        it (``loaded_items``: [index, item] pairs; ``loaded_results``: [index, output,
        failed], absent when not loaded). A step stored before the split (its items and
        outputs inline) comes back whole, for the store to write apart."""
        if "total" not in data:
            return cls._inline(data, request)
        items = {int(i): item for i, item in data.get("loaded_items", ())}
        loaded = data.get("loaded_results")
        results: list[Result] = [(int(i), o, bool(f)) for i, o, f in loaded or ()]
        return cls(
            request=str(data["request"]),
            total=int(data["total"]),
            window=int(data["window"]),
            next=int(data.get("next", 0)),
            running=[int(i) for i in data.get("running", ())],
            attempts={int(i): int(n) for i, n in data.get("attempts", ())},
            backoff=[int(i) for i in data.get("backoff", ())],
            held=[int(i) for i in data.get("held", ())],
            ended=int(data.get("ended", 0)),
            failed=int(data.get("failed", 0)),
            cost=money_in(data.get("cost")),
            loads=int(data.get("loads", 0)),
            wants_all=bool(data.get("wants_all", False)),
            items=items,
            results=ResultLog(results),
            results_complete=loaded is not None,
            saved_results=len(results),
        )

    @classmethod
    def _inline(cls, data: dict[str, Any], request: str) -> ForEachState:
        items = list(data["items"])
        outputs = {int(i): v for i, v in dict(data.get("outputs", {})).items()}
        failed = {int(i) for i in data.get("failed", ())}
        state = cls(
            request=request,
            total=len(items),
            window=int(data.get("window", 10)),
            next=int(data.get("next", 0)),
            running=[int(i) for i in data.get("running", ())],
            cost=money_in(data.get("cost")),
            items=dict(enumerate(items)),
            saved_items=False,
        )
        for index, output in outputs.items():
            state.end(index, output, index in failed)
        return state


def money_out(money: Money) -> dict[str, str]:
    return {"amount": str(money.amount), "currency": money.currency}


def money_in(data: dict[str, str] | None) -> Money | None:
    if not data:
        return None
    return Money(Decimal(data["amount"]), data.get("currency", "USD"))
