"""``script``: canned replies, costs, delays and failures read from a file.

Tests and demos use it to drive gateways, budgets and retries. The file (YAML or
JSON) holds a list of rules; the first rule that matches the task answers it::

    replies:
      - match: "needs review"      # substring of the message (optional)
        agent: reviewer             # only for this agent name (optional)
        times: 2                    # only the first 2 matching calls (optional)
        fail: {code: AGENT_UNAVAILABLE, message: "reviewer is offline"}
      - regex: "^score (\\d+)"     # a regular expression instead of a substring
        output: '{"score": 7}'
        cost: "0.25"                # or {amount: "0.25", currency: EUR}
        context_used: 1200
        delay: 500ms
      - output: "echo: {message}"  # {message}, {agent} and {work_id} are filled in

No rule matches: the task fails with AGENT_ERROR. The file is read at the first task
and again whenever it changes.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trinity_work.domain.model import AgentTask, Money, WorkResult
from trinity_work.executor.agents.base import currency_of, parse_cost
from trinity_work.executor.config import ConfigError, ExecutorConfig, parse_duration
from trinity_work.executor.jobs import Job, JobFailed


@dataclass
class _Rule:
    match: str | None
    regex: re.Pattern[str] | None
    agent: str | None
    times: int | None
    output: str
    cost: Any
    context_used: int
    delay: float
    fail: dict[str, str] | None
    used: int = 0

    def applies(self, task: AgentTask) -> bool:
        if self.agent is not None and self.agent != task.agent:
            return False
        if self.times is not None and self.used >= self.times:
            return False
        if self.match is not None and self.match not in task.message:
            return False
        return not (self.regex is not None and not self.regex.search(task.message))


def _rule(raw: Any, where: str) -> _Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a rule must be a mapping")
    fail = raw.get("fail")
    if fail is not None and (not isinstance(fail, dict) or not fail.get("code")):
        raise ConfigError(f"{where}.fail: needs a code")
    try:
        regex = re.compile(str(raw["regex"])) if raw.get("regex") is not None else None
    except re.error as exc:
        raise ConfigError(f"{where}.regex: {exc}") from None
    return _Rule(
        match=str(raw["match"]) if raw.get("match") is not None else None,
        regex=regex,
        agent=str(raw["agent"]) if raw.get("agent") is not None else None,
        times=int(raw["times"]) if raw.get("times") is not None else None,
        output=str(raw.get("output", "")),
        cost=raw.get("cost"),
        context_used=int(raw.get("context_used", 0)),
        delay=parse_duration(raw["delay"], f"{where}.delay") if raw.get("delay") else 0.0,
        fail={str(k): str(v) for k, v in fail.items()} if fail else None,
    )


def load_rules(path: Path) -> list[_Rule]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"script file {path}: {exc}") from None
    replies = data.get("replies") if isinstance(data, dict) else None
    if not isinstance(replies, list):
        raise ConfigError(f"script file {path}: needs a list 'replies'")
    return [_rule(raw, f"{path}: replies[{i}]") for i, raw in enumerate(replies)]


class ScriptAgent:
    def __init__(self, options: dict[str, Any], config: ExecutorConfig) -> None:
        if not options.get("file"):
            raise ConfigError("the script backend needs 'file'")
        self._path = config.path(str(options["file"]))
        self._rules: list[_Rule] = []
        self._mtime: float | None = None
        self._lock = asyncio.Lock()

    def _refresh(self) -> None:
        try:
            mtime = self._path.stat().st_mtime
        except OSError as exc:
            raise JobFailed("AGENT_UNAVAILABLE", f"script file {self._path}: {exc}") from None
        if mtime != self._mtime:
            try:
                self._rules = load_rules(self._path)
            except ConfigError as exc:
                raise JobFailed("AGENT_ERROR", str(exc)) from None
            self._mtime = mtime

    async def run(self, task: AgentTask, job: Job) -> WorkResult:
        async with self._lock:
            self._refresh()
            rule = next((r for r in self._rules if r.applies(task)), None)
            if rule is not None:
                rule.used += 1
        if rule is None:
            raise JobFailed("AGENT_ERROR", f"no scripted reply matches the task for {task.agent!r}")
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if rule.fail is not None:
            details = {k: v for k, v in rule.fail.items() if k not in ("code", "message")}
            raise JobFailed(
                rule.fail["code"], rule.fail.get("message", "scripted failure"), details
            )
        output = (
            rule.output.replace("{message}", task.message)
            .replace("{agent}", task.agent)
            .replace("{work_id}", job.work_id)
        )
        cost: Money | None = parse_cost(rule.cost, currency_of(task))
        if cost is None:
            cost = parse_cost("0", currency_of(task))
        return WorkResult(output=output, cost=cost, context_used=rule.context_used)

    async def close(self) -> None:
        return None
