"""JetStream publishes with their acks collected as they arrive (the outbox relay's).

Each publish gets a reply subject under one subscription, and a future resolved with
JetStream's ack and the instant (``time.time()``) it arrived, or with its error.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError


class PublishRejected(Exception):
    """JetStream answered a publish with an error (e.g. wrong last message id)."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('description', error)} (err_code {error.get('err_code')})")
        self.error = error


class AckCollector:
    """Pipelined JetStream publishes: each gets a reply subject and a future for its ack
    and the instant (``time.time()``) the ack arrived.

    (nats-py's ``publish_async`` leaves the future unresolved when the server
    answers with an error, so a rejection would cost a whole ack timeout.)
    """

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix: str | None = None
        self._futures: dict[str, asyncio.Future[tuple[PubAck, float]]] = {}
        self._counter = 0

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> asyncio.Future[tuple[PubAck, float]]:
        if self._prefix is None:
            prefix = self._nc.new_inbox()
            await self._nc.subscribe(f"{prefix}.*", cb=self._on_reply)
            self._prefix = prefix
        self._counter += 1
        token = str(self._counter)
        future: asyncio.Future[tuple[PubAck, float]] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        future.add_done_callback(lambda _f: self._futures.pop(token, None))
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=headers)
        return future

    async def _on_reply(self, msg: Msg) -> None:
        assert self._prefix is not None
        future = self._futures.get(msg.subject[len(self._prefix) + 1 :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_exception(NoStreamResponseError())
            return
        try:
            response = json.loads(msg.data)
        except ValueError as exc:
            future.set_exception(exc)
            return
        if "error" in response:
            future.set_exception(PublishRejected(response["error"]))
        else:
            future.set_result((PubAck.from_response(response), time.time()))
