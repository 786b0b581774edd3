"""Who to wake right after a decision commits: the outbox relay, the dispatcher, watchers,
the delivery of messages that came before their step waited.

Each also polls, so a lost wake-up (a crash between commit and notify) only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping

from trinity_execution import domain as d
from trinity_execution.application.ports import Written
from trinity_platform.unit_of_work import Transaction
from trinity_process_model.model import Step

# Counts what committed facts report (the service's metrics).
FactObserver = Callable[[Iterable[d.Fact], Mapping[str, Step]], None]


def _unobserved(_facts: Iterable[d.Fact], _steps: Mapping[str, Step]) -> None:
    pass


class Wakeups:
    def __init__(
        self,
        outbox: Callable[[], None],
        dispatcher: Callable[[], None],
        messages: Callable[[], None] = lambda: None,
        observe: FactObserver = _unobserved,
    ) -> None:
        self._observe = observe
        self._outbox = outbox
        self._dispatcher = dispatcher
        self._messages = messages
        self._facts_changed = asyncio.Event()

    def on_commit(self, tx: Transaction, written: Written, steps: Mapping[str, Step]) -> None:
        """Wake whom ``written`` concerns once ``tx`` has committed (never if it rolls back)."""
        tx.after_commit(lambda: self.after_commit(written, steps))

    def after_commit(self, written: Written, steps: Mapping[str, Step]) -> None:
        self._observe(written.reported, steps)
        if written.facts:
            self._outbox()
            # Wake every watcher once; each re-reads its execution's fact log.
            self._facts_changed.set()
            self._facts_changed = asyncio.Event()
        if written.dispatches:
            self._dispatcher()
        if written.subscriptions:
            self._messages()

    async def facts_changed(self, at_most: float) -> None:
        """Wait until some execution has new facts, at most `at_most` seconds (other
        replicas write too, and they cannot wake us)."""
        event = self._facts_changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), at_most)
