"""``command``: run a CLI agent (for example ``codex exec``) as a child process.

Options::

    command: [codex, exec, --skip-git-repo-check, "{message}"]   # argv, never a shell
    stdin: false                  # true: the message goes to stdin instead
    cwd: /work/repo
    env: {CODEX_HOME: "${CODEX_HOME}"}     # the child's extra environment
    credential_files: ["${CODEX_HOME}/auth.json"]
    required_env: [OPENAI_API_KEY]
    output: text                  # or json: {"output", "cost", "context_used", "evidence"}
    timeout: 30m

Before anything runs, every credential file must exist and every required variable be
set; otherwise the task fails at once with CREDENTIALS_MISSING and a message naming
what is missing (never its value). The child gets PATH, HOME, LANG, the variables of
``env`` and ``required_env``, nothing else of the executor's environment. A non-zero
exit fails the task with AGENT_ERROR; stderr is kept as a log evidence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from trinity_work.domain.model import AgentTask, Evidence, EvidenceKind, WorkResult
from trinity_work.executor.agents.base import currency_of, parse_cost
from trinity_work.executor.agents.http import evidence_from
from trinity_work.executor.config import ConfigError, ExecutorConfig, MissingVariable, expand
from trinity_work.executor.jobs import Job, JobFailed
from trinity_work.executor.process import run_process, tail

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return list(value)


def missing_credentials(
    agent: str, files: list[str], required_env: list[str], env: dict[str, str] | None = None
) -> JobFailed | None:
    """CREDENTIALS_MISSING naming every missing credential, or None when all are there."""
    env = dict(os.environ) if env is None else env
    missing: list[str] = []
    for name in required_env:
        if not env.get(name):
            missing.append(f"environment variable {name} is not set")
    for template in files:
        try:
            path = Path(expand(template, env)).expanduser()
        except MissingVariable as exc:
            missing.append(f"environment variable {exc.name} is not set (needed for {template})")
            continue
        if not path.is_file():
            missing.append(f"credential file {path} does not exist")
    if not missing:
        return None
    return JobFailed(
        "CREDENTIALS_MISSING",
        f"agent {agent!r} cannot run on this executor: " + "; ".join(missing),
        {"missing": "; ".join(missing)},
    )


class CommandAgent:
    def __init__(self, options: dict[str, Any], config: ExecutorConfig) -> None:
        self._argv = _strings(options.get("command"), "command")
        if not self._argv:
            raise ConfigError("the command backend needs 'command' (a list: argv, no shell)")
        self._stdin = bool(options.get("stdin", False))
        self._cwd = str(config.path(str(options["cwd"]))) if options.get("cwd") else None
        self._env = {str(k): str(v) for k, v in (options.get("env") or {}).items()}
        self._files = _strings(options.get("credential_files"), "credential_files")
        self._required = _strings(options.get("required_env"), "required_env")
        self._json = str(options.get("output", "text")) == "json"

    def _child_env(self, agent: str) -> dict[str, str]:
        env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
        for name in self._required:
            env[name] = os.environ[name]
        for name, value in self._env.items():
            try:
                env[name] = expand(value)
            except MissingVariable as exc:
                raise JobFailed(
                    "CREDENTIALS_MISSING",
                    f"agent {agent!r} needs the environment variable {exc.name}, "
                    "which is not set on this executor",
                    {"variable": exc.name},
                ) from None
        return env

    async def run(self, task: AgentTask, job: Job) -> WorkResult:
        problem = missing_credentials(task.agent, self._files, self._required)
        if problem is not None:
            raise problem
        env = self._child_env(task.agent)
        argv = [
            a.replace("{message}", task.message)
            .replace("{agent}", task.agent)
            .replace("{work_id}", job.work_id)
            for a in self._argv
        ]
        try:
            done = await run_process(
                argv, cwd=self._cwd, env=env, stdin=task.message if self._stdin else None
            )
        except OSError as exc:
            raise JobFailed(
                "AGENT_UNAVAILABLE", f"cannot start {argv[0]!r} for agent {task.agent!r}: {exc}"
            ) from None
        logs = (
            (Evidence(EvidenceKind.LOG, "stderr", text=tail(done.stderr)),) if done.stderr else ()
        )
        if done.returncode != 0:
            raise JobFailed(
                "AGENT_ERROR",
                f"agent {task.agent!r} exited with {done.returncode}: {tail(done.stderr, 2000)}",
                {"exit_code": str(done.returncode)},
            )
        if self._json:
            try:
                data = json.loads(done.stdout)
            except ValueError:
                raise JobFailed(
                    "AGENT_ERROR", f"agent {task.agent!r} printed invalid JSON"
                ) from None
            if not isinstance(data, dict):
                raise JobFailed(
                    "AGENT_ERROR", f"agent {task.agent!r} printed JSON that is not an object"
                )
            output = data.get("output", "")
            return WorkResult(
                output=output if isinstance(output, str) else json.dumps(output),
                cost=parse_cost(data.get("cost", "0"), currency_of(task)),
                context_used=int(data.get("context_used") or 0),
                evidence=(*evidence_from(data.get("evidence")), *logs),
            )
        return WorkResult(
            output=done.stdout, cost=parse_cost("0", currency_of(task)), evidence=logs
        )

    async def close(self) -> None:
        return None
