"""AgentGateway: the anti-corruption layer between work requests and agent runtimes.

It picks the backend configured for the task's agent name, runs it, and translates
whatever goes wrong into a stable failure code (AGENT_UNAVAILABLE, TIMEOUT,
CREDENTIALS_MISSING, BUDGET_EXCEEDED, AGENT_ERROR).
"""

from __future__ import annotations

from trinity_work.domain.model import AgentTask, WorkResult
from trinity_work.executor.agents.base import AgentBackend, check_budget
from trinity_work.executor.config import AgentConfig, ExecutorConfig
from trinity_work.executor.jobs import Job, JobFailed


def build_backend(agent: AgentConfig, config: ExecutorConfig) -> AgentBackend:
    if agent.backend == "echo":
        from trinity_work.executor.agents.echo import EchoAgent

        return EchoAgent()
    raise JobFailed("AGENT_UNAVAILABLE", f"backend {agent.backend!r} is not available")


class AgentGateway:
    def __init__(self, config: ExecutorConfig) -> None:
        self._config = config
        self._backends: dict[str, AgentBackend] = {}

    def _backend(self, name: str) -> AgentBackend:
        agent = self._config.agent(name)
        if agent is None:
            raise JobFailed(
                "AGENT_UNAVAILABLE",
                f"no agent named {name!r} is configured on this executor",
                {"agent": name},
            )
        backend = self._backends.get(agent.name)
        if backend is None:
            backend = self._backends[agent.name] = build_backend(agent, self._config)
        return backend

    async def execute_task(self, task: AgentTask, job: Job) -> WorkResult:
        result = await self._backend(task.agent).run(task, job)
        check_budget(task, result.cost)
        return result

    async def close(self) -> None:
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()
