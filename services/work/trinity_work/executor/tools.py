"""Tool runs: the command of an action kind comes from the executor's configuration (an
allow-list). A work request only picks the action and fills declared arguments, each
checked against its pattern and substituted inside one argv element: a definition can
never inject a command or a shell."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile

from trinity_work.domain.model import Evidence, EvidenceKind, FailureCode, ToolRun, WorkResult
from trinity_work.executor.config import (
    PLACEHOLDER,
    ExecutorConfig,
    MissingVariable,
    ToolConfig,
    expand,
)
from trinity_work.executor.jobs import Job, JobFailed
from trinity_work.executor.process import run_process, tail

BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def build_argv(tool: ToolConfig, arguments: dict[str, str]) -> list[str]:
    """The argv of a run, or :class:`JobFailed` (ARGUMENT_NOT_ALLOWED)."""
    unknown = sorted(set(arguments) - set(tool.arguments))
    if unknown:
        raise JobFailed(
            FailureCode.ARGUMENT_NOT_ALLOWED.value,
            f"the {tool.action.value} tool takes no argument(s) {', '.join(unknown)}",
            {"arguments": ",".join(unknown)},
        )
    values: dict[str, str] = {}
    for name, spec in tool.arguments.items():
        value = arguments.get(name, spec.default)
        if value is None:
            raise JobFailed(
                FailureCode.ARGUMENT_NOT_ALLOWED.value,
                f"the {tool.action.value} tool needs the argument {name}",
                {"argument": name},
            )
        if not re.fullmatch(spec.pattern, value):
            raise JobFailed(
                FailureCode.ARGUMENT_NOT_ALLOWED.value,
                f"the value of argument {name} does not match {spec.pattern}",
                {"argument": name},
            )
        values[name] = value
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], element) for element in tool.command]


class ToolRunner:
    def __init__(self, config: ExecutorConfig) -> None:
        self._config = config

    async def run(self, run: ToolRun, job: Job) -> WorkResult:
        tool = self._config.tools.get(run.action)
        if tool is None:
            raise JobFailed(
                FailureCode.TOOL_NOT_CONFIGURED.value,
                f"this executor has no command for the {run.action.value} action",
                {"action": run.action.value},
            )
        argv = build_argv(tool, dict(run.arguments))
        env = {name: os.environ[name] for name in BASE_ENV if name in os.environ}
        for name, value in tool.env.items():
            try:
                env[name] = expand(value)
            except MissingVariable as exc:
                raise JobFailed(
                    FailureCode.CREDENTIALS_MISSING.value,
                    f"the {run.action.value} tool needs the environment variable {exc.name}, "
                    "which is not set on this executor",
                    {"variable": exc.name},
                ) from None
        scratch = None
        if tool.cwd:
            cwd = str(self._config.path(tool.cwd))
        else:
            scratch = cwd = tempfile.mkdtemp(prefix=f"trinity-{run.action.value}-")
        try:
            try:
                done = await asyncio.wait_for(
                    run_process(argv, cwd=cwd, env=env), timeout=tool.timeout
                )
            except TimeoutError:
                raise JobFailed(
                    FailureCode.TIMEOUT.value,
                    f"the {run.action.value} tool ran longer than {tool.timeout:g}s",
                ) from None
            except OSError as exc:
                raise JobFailed(
                    FailureCode.TOOL_FAILED.value, f"cannot start {argv[0]!r}: {exc}"
                ) from None
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if done.returncode != 0:
            raise JobFailed(
                FailureCode.TOOL_FAILED.value,
                f"{argv[0]} exited with {done.returncode}: {tail(done.stderr or done.stdout, 2000)}",
                {"exit_code": str(done.returncode)},
            )
        evidence = [Evidence(EvidenceKind.LOG, "stdout", text=tail(done.stdout))]
        if done.stderr:
            evidence.append(Evidence(EvidenceKind.LOG, "stderr", text=tail(done.stderr)))
        return WorkResult(output=done.stdout, evidence=tuple(evidence))
