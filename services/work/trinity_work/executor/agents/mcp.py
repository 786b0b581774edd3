"""``mcp``: call a tool on an MCP server with the official ``mcp`` SDK.

Options: ``command`` (argv of a stdio server) or ``url`` (Streamable HTTP endpoint);
``env`` (for a stdio server; values may reference ``${ENV}``), ``headers`` are not
needed for stdio; ``tool`` (required); ``arguments`` (the tool's arguments; string
values may contain ``{message}``, ``{agent}``, ``{work_id}``; default
``{message: "{message}"}``); ``timeout`` (default 60s).

The answer: the tool's structured content, or its text content. When that is a JSON
object with an ``output`` key, ``output``, ``cost``, ``context_used`` and ``evidence``
are read from it (like the http backend); otherwise the text is the output. A tool
error fails the task with AGENT_ERROR; an unreachable server with AGENT_UNAVAILABLE.

One session per configured agent is kept open (a stdio server keeps running) and
reopened after it breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from trinity_platform.logs import get_logger
from trinity_work.domain.model import AgentTask, WorkResult
from trinity_work.executor.agents.base import currency_of, parse_cost
from trinity_work.executor.agents.http import evidence_from
from trinity_work.executor.config import (
    ConfigError,
    ExecutorConfig,
    MissingVariable,
    expand,
    parse_duration,
)
from trinity_work.executor.jobs import Job, JobFailed

_log = get_logger(__name__)


def _fill(value: Any, task: AgentTask, job: Job) -> Any:
    if isinstance(value, str):
        return (
            value.replace("{message}", task.message)
            .replace("{agent}", task.agent)
            .replace("{work_id}", job.work_id)
        )
    if isinstance(value, dict):
        return {k: _fill(v, task, job) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, task, job) for v in value]
    return value


class _Session:
    """Owns one ``mcp.Client`` in a task of its own (its context must be left by the
    task that entered it); jobs call tools on it from their tasks."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._closing = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._own(), name="mcp-session")

    async def _own(self) -> None:
        try:
            async with Client(self._server) as client:
                self._ready.set_result(client)
                await self._closing.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(
                    exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
                )
            if not isinstance(exc, Exception):
                raise

    async def client(self, wait_seconds: float) -> Client:
        return await asyncio.wait_for(asyncio.shield(self._ready), wait_seconds)

    @property
    def broken(self) -> bool:
        return self._task.done()

    async def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self._task, 5.0)


class McpAgent:
    def __init__(self, options: dict[str, Any], config: ExecutorConfig) -> None:
        if not options.get("tool"):
            raise ConfigError("the mcp backend needs 'tool'")
        if bool(options.get("command")) == bool(options.get("url")):
            raise ConfigError("the mcp backend needs exactly one of 'command' (stdio) or 'url'")
        command = options.get("command")
        if command is not None and (
            not isinstance(command, list)
            or not command
            or not all(isinstance(c, str) for c in command)
        ):
            raise ConfigError("mcp 'command' must be a non-empty list of strings")
        self._options = options
        self._config = config
        self._tool = str(options["tool"])
        self._arguments = options.get("arguments") or {"message": "{message}"}
        self._timeout = parse_duration(options.get("timeout", 60), "timeout")
        self._session: _Session | None = None
        self._lock = asyncio.Lock()

    def _server(self, agent: str) -> Any:
        if self._options.get("url"):
            return str(self._options["url"])
        argv = [str(a) for a in self._options["command"]]
        env = {}
        for name, value in (self._options.get("env") or {}).items():
            try:
                env[str(name)] = expand(str(value))
            except MissingVariable as missing:
                raise JobFailed(
                    "CREDENTIALS_MISSING",
                    f"agent {agent!r} needs the environment variable {missing.name}, "
                    "which is not set on this executor",
                    {"variable": missing.name},
                ) from None
        cwd = self._options.get("cwd")
        return StdioServerParameters(
            command=argv[0],
            args=argv[1:],
            env=env or None,
            cwd=str(self._config.path(str(cwd))) if cwd else None,
        )

    async def _client(self, agent: str) -> Client:
        async with self._lock:
            if self._session is None or self._session.broken:
                if self._session is not None:
                    await self._session.close()
                self._session = _Session(self._server(agent))
            session = self._session
        try:
            return await session.client(self._timeout)
        except (TimeoutError, Exception) as exc:
            await self._reset(session)
            raise JobFailed(
                "AGENT_UNAVAILABLE", f"cannot reach the MCP server of agent {agent!r}: {exc!r}"
            ) from None

    async def _reset(self, session: _Session) -> None:
        async with self._lock:
            if self._session is session:
                self._session = None
        await session.close()

    async def run(self, task: AgentTask, job: Job) -> WorkResult:
        client = await self._client(task.agent)
        arguments = _fill(self._arguments, task, job)
        try:
            result = await asyncio.wait_for(
                client.call_tool(self._tool, arguments), timeout=self._timeout
            )
        except TimeoutError:
            raise JobFailed(
                "TIMEOUT", f"the MCP tool {self._tool!r} did not answer in {self._timeout:g}s"
            ) from None
        except MCPError as exc:
            raise JobFailed("AGENT_ERROR", f"the MCP tool {self._tool!r} failed: {exc}") from None
        except Exception as exc:
            if self._session is not None:
                await self._reset(self._session)
            raise JobFailed(
                "AGENT_UNAVAILABLE", f"the MCP server of agent {task.agent!r} failed: {exc!r}"
            ) from None
        text = "\n".join(
            str(getattr(block, "text", ""))
            for block in result.content
            if getattr(block, "type", "") == "text"
        )
        if result.is_error:
            raise JobFailed("AGENT_ERROR", f"the MCP tool {self._tool!r} reported: {text[:1000]}")
        data: Any = result.structured_content
        if not (isinstance(data, dict) and "output" in data) and text.strip().startswith("{"):
            with contextlib.suppress(ValueError):
                data = json.loads(text)  # a JSON answer in the text content
        if isinstance(data, dict) and "output" in data:
            output = data["output"]
            return WorkResult(
                output=output if isinstance(output, str) else json.dumps(output),
                cost=parse_cost(data.get("cost", "0"), currency_of(task)),
                context_used=int(data.get("context_used") or 0),
                evidence=evidence_from(data.get("evidence")),
            )
        if isinstance(data, dict) and not text:
            text = json.dumps(data)
        return WorkResult(output=text, cost=parse_cost("0", currency_of(task)))

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
