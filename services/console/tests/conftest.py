"""A console served on a free port, with a recording fake of the services (the port)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from trinity_console.app import create_app
from trinity_console.backend import Backend
from trinity_console.settings import ConsoleSettings

TOKENS = {"reviewer-token": "reviewer@example.com", "lead-token": "lead@example.com"}


class FakeBackend(Backend):
    """Answers from ``replies`` (method → response, exception, or callable(request));
    records every call with the token it carried."""

    def __init__(self) -> None:
        super().__init__({})
        self.replies: dict[str, Any] = {}
        self.facts: list[Any] = []
        self.stream_error: Exception | None = None
        # When set, the stream stays open after its facts until it is set.
        self.hold: asyncio.Event | None = None
        self.calls: list[tuple[str, Any, str]] = []

    async def call(self, service: str, method: str, request: Any, token: str) -> Any:
        self.calls.append((method, request, token))
        reply = self.replies[method]
        if isinstance(reply, Exception):
            raise reply
        return reply(request) if callable(reply) else reply

    async def stream(
        self, service: str, method: str, request: Any, token: str
    ) -> AsyncIterator[Any]:
        self.calls.append((method, request, token))
        for fact in self.facts:
            yield fact
        if self.hold is not None:
            await self.hold.wait()
        if self.stream_error is not None:
            raise self.stream_error

    async def close(self) -> None:
        return None


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def make_client(
    backend: FakeBackend,
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(principals: dict[str, str] | None = None) -> TestClient[Any, Any]:
        settings = ConsoleSettings(principals=TOKENS if principals is None else principals)
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings, backend)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await make_client()
    return result


async def sign_in(client: TestClient[Any, Any], token: str = "reviewer-token") -> str:
    """Sign in and return the page's CSRF token."""
    reply = await client.post("/signin", data={"token": token}, allow_redirects=False)
    assert reply.status == 303, await reply.text()
    page = await (await client.get("/signin")).text()  # its sign-out form carries the token
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found, page
    return found.group(1)
