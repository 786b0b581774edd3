"""``http``: POST the task to an agent endpoint and read its answer.

Request body (JSON)::

    {"work_id": "...", "agent": "...", "message": "...",
     "correlation": {"execution_id": "...", "step_id": "...", "iteration": 1, "attempt": 1},
     "max_cost": {"amount": "1.50", "currency": "USD"} | null}

Answer: JSON ``{"output": "...", "cost": "0.12" | {"amount": "0.12", "currency": "USD"},
"context_used": 1234, "evidence": [{"kind": "link", "name": "...", "uri": "...", "text": "..."}]}``
or any other content type, taken as the output text.

Options: ``url`` (required), ``headers`` (values may reference ``${ENV}``: a missing
variable fails the task with CREDENTIALS_MISSING), ``timeout`` (default 60s).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from trinity_work.domain.model import AgentTask, Evidence, EvidenceKind, WorkResult
from trinity_work.executor.agents.base import currency_of, parse_cost
from trinity_work.executor.config import ConfigError, MissingVariable, expand, parse_duration
from trinity_work.executor.jobs import Job, JobFailed


def evidence_from(items: Any) -> tuple[Evidence, ...]:
    if not isinstance(items, list):
        return ()
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        try:
            kind = EvidenceKind(str(item.get("kind", "summary")).lower())
        except ValueError:
            kind = EvidenceKind.SUMMARY
        out.append(
            Evidence(
                kind, str(item.get("name", "")), str(item.get("uri", "")), str(item.get("text", ""))
            )
        )
    return tuple(out)


def headers_from(options: dict[str, Any], agent: str) -> dict[str, str]:
    headers = {}
    for name, value in (options.get("headers") or {}).items():
        try:
            headers[str(name)] = expand(str(value))
        except MissingVariable as missing:
            raise JobFailed(
                "CREDENTIALS_MISSING",
                f"agent {agent!r} needs the environment variable {missing.name} "
                f"(for the {name} header), which is not set on this executor",
                {"variable": missing.name},
            ) from None
    return headers


class HttpAgent:
    def __init__(self, options: dict[str, Any]) -> None:
        if not options.get("url"):
            raise ConfigError("the http backend needs 'url'")
        self._options = options
        self._url = str(options["url"])
        timeout = parse_duration(options.get("timeout", 60), "timeout")
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    async def run(self, task: AgentTask, job: Job) -> WorkResult:
        headers = headers_from(self._options, task.agent)
        body = {
            "work_id": job.work_id,
            "agent": task.agent,
            "message": task.message,
            "correlation": {
                "execution_id": job.correlation.execution_id,
                "step_id": job.correlation.step_id,
                "iteration": job.correlation.iteration,
                "attempt": job.correlation.attempt,
            },
            "max_cost": (
                {"amount": str(task.max_cost.amount), "currency": task.max_cost.currency}
                if task.max_cost is not None
                else None
            ),
        }
        try:
            response = await self._client.post(self._url, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise JobFailed(
                "TIMEOUT", f"agent {task.agent!r} did not answer in time: {exc!r}"
            ) from None
        except httpx.TransportError as exc:
            raise JobFailed(
                "AGENT_UNAVAILABLE", f"agent {task.agent!r} is unreachable at {self._url}: {exc!r}"
            ) from None
        status = response.status_code
        if status in (401, 403):
            raise JobFailed(
                "CREDENTIALS_REJECTED",
                f"agent {task.agent!r} refused the executor's credentials (HTTP {status})",
                {"status": str(status)},
            )
        if status == 429 or status >= 500:
            raise JobFailed(
                "AGENT_UNAVAILABLE",
                f"agent {task.agent!r} answered HTTP {status}",
                {"status": str(status)},
            )
        if status >= 400:
            raise JobFailed(
                "AGENT_ERROR",
                f"agent {task.agent!r} answered HTTP {status}: {response.text[:500]}",
                {"status": str(status)},
            )
        if not response.headers.get("content-type", "").startswith("application/json"):
            return WorkResult(output=response.text, cost=parse_cost("0", currency_of(task)))
        try:
            data = response.json()
        except ValueError:
            raise JobFailed("AGENT_ERROR", f"agent {task.agent!r} answered invalid JSON") from None
        if not isinstance(data, dict):
            raise JobFailed(
                "AGENT_ERROR", f"agent {task.agent!r} answered JSON that is not an object"
            )
        output = data.get("output", "")
        return WorkResult(
            output=output if isinstance(output, str) else json.dumps(output),
            cost=parse_cost(data.get("cost"), currency_of(task)),
            context_used=int(data.get("context_used") or 0),
            evidence=evidence_from(data.get("evidence")),
        )

    async def close(self) -> None:
        await self._client.aclose()
