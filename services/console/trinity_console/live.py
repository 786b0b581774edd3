"""An execution's live timeline: its facts (WatchExecution) as Server-Sent Events.

Events: ``fact`` (one timeline entry, ``id`` = its sequence, so a reconnecting
browser resumes after the last one it saw through Last-Event-ID), ``state`` (the
execution as GetExecution shows it, for the graph colours, steps and costs; read
once per burst of facts, not once per fact), ``end`` (the execution finished) and
``failure`` (a service refused, e.g. PERMISSION_DENIED; the page shows it and stops).
A comment line every 15 quiet seconds keeps the connection open through proxies and
ends the Watch call soon after the browser has left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_console.backend import Backend, ServiceError
from trinity_console.rendering import STREAMS, context
from trinity_console.views import execution_view, fact_view

END = object()
BUFFER = 500  # facts read ahead of the browser; the stream waits beyond that
HEARTBEAT_SECONDS = 15.0


def _after(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    return int(raw) if raw.isdigit() and len(raw) < 20 else 0


async def _send(response: web.StreamResponse, event: str, data: Any, event_id: int = 0) -> None:
    # json.dumps never emits a raw newline, so the data is one SSE line.
    lines = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    await response.write(f"{lines}data: {json.dumps(data)}\n\n".encode())


async def _snapshot(backend: Backend, execution_id: str, token: str) -> Any:
    reply = await backend.call(
        "execution", "GetExecution", api.GetExecutionRequest(execution_id=execution_id), token
    )
    return reply.execution


async def execution_events(request: web.Request) -> web.StreamResponse:
    backend, token = context(request)
    execution_id = request.match_info["id"]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    queue: asyncio.Queue[Any] = asyncio.Queue(BUFFER)

    async def pump() -> None:
        watch = api.WatchExecutionRequest(execution_id=execution_id, after_sequence=_after(request))
        try:
            async for item in backend.stream("execution", "WatchExecution", watch, token):
                await queue.put(item)
            await queue.put(END)
        except ServiceError as error:
            await queue.put(error)

    task = asyncio.current_task()
    streams = request.app[STREAMS]
    if task is not None:
        streams.add(task)
    reader = asyncio.create_task(pump())
    try:
        execution = await _snapshot(backend, execution_id, token)
        kinds = {step.step_id: int(step.kind) for step in execution.steps}
        await _send(response, "state", execution_view(execution))
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                # Quiet for a while (waiting for a person): a comment line keeps proxies
                # from closing the stream and shows when the browser has gone away.
                await response.write(b": keep-alive\n\n")
                continue
            batch = [first]
            while not queue.empty():
                batch.append(queue.get_nowait())
            for item in batch:
                if item is END:
                    execution = await _snapshot(backend, execution_id, token)
                    await _send(response, "state", execution_view(execution))
                    await _send(response, "end", {"status": execution_view(execution)["status"]})
                    return response
                if isinstance(item, ServiceError):
                    await _send(response, "failure", item.as_dict())
                    return response
                await _send(response, "fact", fact_view(item, kinds), item.sequence)
            execution = await _snapshot(backend, execution_id, token)
            await _send(response, "state", execution_view(execution))
    except ServiceError as error:
        with contextlib.suppress(ConnectionError):
            await _send(response, "failure", error.as_dict())
        return response
    except ConnectionError:  # the browser went away
        return response
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        if task is not None:
            streams.discard(task)
