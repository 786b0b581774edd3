"""One core-NATS subscription per subject the published definitions listen on.

Event triggers and wait_for_message steps both name NATS subjects in their definitions.
A :class:`SubjectRoutes` keeps, every ``refresh_interval``, exactly one subscription per
subject of the current routes (in one queue group, so each message reaches one replica)
and hands each message with the routes of its subject to ``on_message``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

R = TypeVar("R")

LoadRoutes = Callable[[], Awaitable[Iterable[tuple[str, R]]]]
OnMessage = Callable[[Msg, list[R], str], Awaitable[None]]


def message_id(msg: Msg) -> str:
    """Nats-Msg-Id, else ce-id; a message without either gets a fresh id (no dedupe)."""
    headers = msg.headers or {}
    return headers.get("Nats-Msg-Id") or headers.get("ce-id") or str(uuid.uuid4())


class SubjectRoutes(Generic[R]):
    def __init__(
        self,
        nats: NATS,
        queue: str,
        load: LoadRoutes[R],
        on_message: OnMessage[R],
        *,
        refresh_interval: float = 2.0,
    ) -> None:
        self._nats = nats
        self._queue = queue
        self._load = load
        self._on_message = on_message
        self._refresh_interval = refresh_interval
        self._routes: dict[str, list[R]] = {}
        self._subscriptions: dict[str, Subscription] = {}

    async def run(self) -> None:
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self._refresh_interval)
        finally:
            for subscription in self._subscriptions.values():
                await subscription.unsubscribe()
            self._subscriptions.clear()

    async def refresh(self) -> None:
        """Subscribe to the subjects of the current routes; drop the rest."""
        routes: dict[str, list[R]] = defaultdict(list)
        for subject, route in await self._load():
            routes[subject].append(route)
        self._routes = dict(routes)
        for subject in set(self._subscriptions) - set(routes):
            await self._subscriptions.pop(subject).unsubscribe()
        for subject in set(routes) - set(self._subscriptions):
            self._subscriptions[subject] = await self._nats.subscribe(
                subject, queue=self._queue, cb=self._handler(subject)
            )

    def _handler(self, subject: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(msg: Msg) -> None:
            await self._on_message(msg, self._routes.get(subject, []), message_id(msg))

        return on_message
