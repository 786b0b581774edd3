"""AgentGateway: the anti-corruption layer between work requests and agent runtimes.

It picks the backend configured for the task's agent name, runs it, and translates
whatever goes wrong into a stable failure code (AGENT_UNAVAILABLE, TIMEOUT,
CREDENTIALS_MISSING, BUDGET_EXCEEDED, AGENT_ERROR).
"""

from __future__ import annotations

from trinity_work.domain.model import AgentTask, WorkResult
from trinity_work.executor.agents.base import AgentBackend, check_budget
from trinity_work.executor.agents.command import CommandAgent
from trinity_work.executor.agents.echo import EchoAgent
from trinity_work.executor.agents.http import HttpAgent
from trinity_work.executor.agents.script import ScriptAgent
from trinity_work.executor.config import AgentConfig, ConfigError, ExecutorConfig
from trinity_work.executor.jobs import Job, JobFailed


def build_backend(agent: AgentConfig, config: ExecutorConfig) -> AgentBackend:
    """Raises :class:`ConfigError` (with the agent's name) for bad options."""
    options = dict(agent.options)
    try:
        if agent.backend == "echo":
            return EchoAgent()
        if agent.backend == "script":
            return ScriptAgent(options, config)
        if agent.backend == "http":
            return HttpAgent(options)
        if agent.backend == "mcp":
            from trinity_work.executor.agents.mcp import McpAgent  # the SDK is heavy to import

            return McpAgent(options, config)
        if agent.backend == "command":
            return CommandAgent(options, config)
    except ConfigError as exc:
        raise ConfigError(f"agents.{agent.name}: {exc}") from None
    raise ConfigError(f"agents.{agent.name}: unknown backend {agent.backend!r}")


class AgentGateway:
    def __init__(self, config: ExecutorConfig) -> None:
        """Builds every configured backend (a bad option fails here, at start)."""
        self._config = config
        self._backends: dict[str, AgentBackend] = {
            name: build_backend(agent, config) for name, agent in config.agents.items()
        }

    def _backend(self, name: str) -> AgentBackend:
        agent = self._config.agent(name)
        if agent is None:
            raise JobFailed(
                "AGENT_UNAVAILABLE",
                f"no agent named {name!r} is configured on this executor",
                {"agent": name},
            )
        return self._backends[agent.name]

    async def execute_task(self, task: AgentTask, job: Job) -> WorkResult:
        result = await self._backend(task.agent).run(task, job)
        check_budget(task, result.cost)
        return result

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()
