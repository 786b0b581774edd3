"""Reading a process text never stalls the service's event loop.

A text of a million characters takes seconds of CPU to read. The reader here blocks
until the test's event loop has run another task: read on the loop (as before), it
waits for a task that cannot run and gives up; read in a worker thread, the loop
stays free and the task runs.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from trinity.process.definition.v1 import definition_service_pb2 as pb
from trinity_definition.api.servicer import DefinitionServicer
from trinity_definition.application.ports import Environment
from trinity_definition.domain.errors import DefinitionUnparsable
from trinity_platform.errors import FieldViolation


class _NoTransactions:
    """The reading fails before any transaction is needed."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"no transaction expected ({name})")


async def test_a_slow_read_leaves_the_event_loop_free() -> None:
    loop_ran = threading.Event()

    def slow_parse(text: str) -> Any:
        # Stands in for seconds of parsing; gives up when the loop cannot run meanwhile.
        if not loop_ran.wait(timeout=30):
            raise DefinitionUnparsable("the event loop was blocked", [FieldViolation("", "x")])
        raise DefinitionUnparsable("read", [FieldViolation("", "unreadable")])

    env = Environment(
        clock=lambda: None,  # type: ignore[arg-type, return-value]
        new_id=lambda: "id",
        validate=lambda spec: [],
        parse=slow_parse,
    )
    servicer = DefinitionServicer(_NoTransactions(), env)  # type: ignore[arg-type]
    reading = asyncio.create_task(
        servicer.ValidateDefinition(pb.ValidateDefinitionRequest(yaml="name: x"), None)
    )

    async def other_call() -> None:
        loop_ran.set()

    await asyncio.gather(other_call(), return_exceptions=True)
    with pytest.raises(DefinitionUnparsable) as caught:
        await reading
    assert caught.value.message == "read"
    assert caught.value.violations == [FieldViolation("yaml", "unreadable")]
