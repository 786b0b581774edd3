"""The latest version of a process, asked by concurrent triggers: they share calls to the
definition service, and none is answered by a call that started before it asked.

A fake definition service whose answer changes between calls (a version published
meanwhile) and whose calls wait on events: ordered by events, never timed. The
end-to-end test (publish, then trigger at once: the new version) is in
tests/e2e/test_definition_lookups.py.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from trinity.process.definition.v1 import definition_pb2, definition_service_pb2
from trinity_execution.infrastructure.definition_catalog import DefinitionCatalog
from trinity_platform.errors import Unavailable


def version(number: str) -> definition_pb2.ProcessDefinition:
    return definition_pb2.ProcessDefinition(
        id=f"def-{number}",
        name="p",
        version=number,
        status=definition_pb2.DEFINITION_STATUS_PUBLISHED,
        spec=definition_pb2.ProcessSpec(
            name="p",
            steps=[
                definition_pb2.Step(
                    id="wait", name="Wait", timer=definition_pb2.Timer(duration=Duration(seconds=1))
                )
            ],
        ),
    )


class DefinitionService:
    """Answers ListDefinitionVersions with ``latest`` as it is when a call starts (a
    status code: that error); a call held by :meth:`hold` then waits for its event."""

    def __init__(self, latest: definition_pb2.ProcessDefinition) -> None:
        self.latest: definition_pb2.ProcessDefinition | grpc.StatusCode = latest
        self.calls = 0
        self.release: dict[int, asyncio.Event] = {}

    def hold(self, call: int) -> asyncio.Event:
        """Make call number ``call`` (from 0) wait until the returned event is set."""
        self.release[call] = asyncio.Event()
        return self.release[call]

    async def ListDefinitionVersions(
        self, request: definition_service_pb2.ListDefinitionVersionsRequest, timeout: float
    ) -> definition_service_pb2.ListDefinitionVersionsResponse:
        assert request.name == "p" and request.page_size == 1
        call = self.calls
        self.calls += 1
        answer = self.latest  # read as the call starts, like the service's query
        if call in self.release:
            await self.release[call].wait()
        if isinstance(answer, grpc.StatusCode):
            raise grpc.aio.AioRpcError(answer, details="down")
        return definition_service_pb2.ListDefinitionVersionsResponse(definitions=[answer])


async def until(condition: object) -> None:
    """Yield to the loop until ``condition()`` holds (each caller runs up to its wait)."""
    async with asyncio.timeout(30):  # a safety net, not a timing
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0)


async def test_a_trigger_arriving_during_a_lookup_waits_for_the_next_one() -> None:
    service = DefinitionService(version("1.0"))
    catalog = DefinitionCatalog(service)  # type: ignore[arg-type]
    release_first = service.hold(0)
    release_second = service.hold(1)
    first = asyncio.ensure_future(catalog.by_name("p"))
    await until(lambda: service.calls == 1)  # the first call has read 1.0 and is in flight

    service.latest = version("1.1")  # published while the first call is in flight
    later = [asyncio.ensure_future(catalog.by_name("p")) for _ in range(5)]
    await until(lambda: catalog.latest_lookups.waiting("p") == 5)
    assert service.calls == 1  # they did not join the call in flight

    release_first.set()
    assert (await first).version == "1.0"  # asked before the publish
    await until(lambda: service.calls == 2)  # one call for the five, started after they asked
    assert not any(call.done() for call in later)
    release_second.set()
    assert [(await call).version for call in later] == ["1.1"] * 5
    assert service.calls == 2


async def test_a_lone_trigger_asks_at_once_and_sees_what_was_published_before() -> None:
    service = DefinitionService(version("1.0"))
    catalog = DefinitionCatalog(service)  # type: ignore[arg-type]
    assert (await catalog.by_name("p")).version == "1.0"
    service.latest = version("1.1")
    assert (await catalog.by_name("p")).version == "1.1"  # never a remembered answer
    assert service.calls == 2


async def test_a_failed_lookup_fails_its_callers_only_and_the_next_one_asks_again() -> None:
    service = DefinitionService(version("1.0"))
    catalog = DefinitionCatalog(service)  # type: ignore[arg-type]
    release_first = service.hold(0)
    first = asyncio.ensure_future(catalog.by_name("p"))
    await until(lambda: service.calls == 1)
    service.latest = grpc.StatusCode.UNAVAILABLE
    waiting = [asyncio.ensure_future(catalog.by_name("p")) for _ in range(3)]
    await until(lambda: catalog.latest_lookups.waiting("p") == 3)
    release_first.set()
    assert (await first).version == "1.0"
    for call in waiting:
        with pytest.raises(Unavailable):
            await call
    service.latest = version("1.1")
    assert (await catalog.by_name("p")).version == "1.1"
    assert service.calls == 3


async def test_a_caller_that_gives_up_does_not_cancel_the_others_lookup() -> None:
    service = DefinitionService(version("1.0"))
    catalog = DefinitionCatalog(service)  # type: ignore[arg-type]
    release_first = service.hold(0)
    release_second = service.hold(1)
    first = asyncio.ensure_future(catalog.by_name("p"))
    await until(lambda: service.calls == 1)
    leaving, staying = (asyncio.ensure_future(catalog.by_name("p")) for _ in range(2))
    await until(lambda: catalog.latest_lookups.waiting("p") == 2)
    leaving.cancel()
    release_first.set()
    await first
    await until(lambda: service.calls == 2)
    release_second.set()
    assert (await staying).version == "1.0"
    assert leaving.cancelled()
