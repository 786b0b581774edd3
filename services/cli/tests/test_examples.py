"""The examples are publishable, and their executor configurations serve them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trinity_process_model.authoring import parse_process
from trinity_process_model.model import AgentTaskConfig, ProcessSpec, ToolRunConfig
from trinity_process_model.validation import validate
from trinity_work.executor.agents.script import load_rules
from trinity_work.executor.config import ExecutorConfig, load_config

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
PROCESS_FILES = sorted(EXAMPLES.glob("*/process.yaml"))
COMBINED = EXAMPLES / "executor.yaml"


def _ids(path: Path) -> str:
    return path.parent.name


def _spec(path: Path) -> ProcessSpec:
    return parse_process(path.read_text())


def _agents(spec: ProcessSpec) -> set[str]:
    return {s.config.agent for s in spec.steps if isinstance(s.config, AgentTaskConfig)}


def _actions(spec: ProcessSpec) -> set[str]:
    return {s.config.action.value for s in spec.steps if isinstance(s.config, ToolRunConfig)}


def test_there_is_one_example_per_seed_scenario_and_composition() -> None:
    assert {p.parent.name for p in PROCESS_FILES} == {
        "research-review",
        "governance-run",
        "weekly-report",
        "pull-request-ci",
    }


@pytest.mark.parametrize("path", PROCESS_FILES, ids=_ids)
def test_example_parses_and_validates(path: Path) -> None:
    spec = _spec(path)
    assert spec.name == path.parent.name
    assert validate(spec) == []


@pytest.mark.parametrize("path", PROCESS_FILES, ids=_ids)
def test_its_executor_configuration_serves_it(path: Path) -> None:
    spec = _spec(path)
    for config in (load_config(path.parent / "executor.yaml"), load_config(COMBINED)):
        assert _agents(spec) <= set(config.agents), config
        assert _actions(spec) <= {action.value for action in config.tools}
        for name in _agents(spec):
            agent = config.agents[name]
            assert agent.backend == "script"
            rules = load_rules(config.path(str(agent.options["file"])))
            assert any(rule.agent == name for rule in rules), f"no scripted reply for {name}"


def _resolved_tools(config: ExecutorConfig) -> dict[str, tuple[object, ...]]:
    """Each tool's command with its script path made absolute, and its arguments."""
    tools = {}
    cwd_of = {a: config.path(t.cwd or ".").resolve() for a, t in config.tools.items()}
    for action, tool in config.tools.items():
        command = tuple(
            str((cwd_of[action] / part).resolve()) if part.endswith(".py") else part
            for part in tool.command
        )
        tools[action.value] = (command, dict(tool.arguments), tool.timeout)
    return tools


def test_the_combined_configuration_matches_each_example() -> None:
    combined = load_config(COMBINED)
    for path in PROCESS_FILES:
        own = load_config(path.parent / "executor.yaml")
        for name, agent in own.agents.items():
            theirs = combined.agents[name]
            assert theirs.backend == agent.backend
            assert (
                combined.path(str(theirs.options["file"])).resolve()
                == own.path(str(agent.options["file"])).resolve()
            )
        own_tools = _resolved_tools(own)
        assert {a: t for a, t in _resolved_tools(combined).items() if a in own_tools} == own_tools


@pytest.mark.parametrize(("round_", "green"), [("1", False), ("2", True)])
def test_the_verify_tool_turns_green_in_round_2(round_: str, green: bool) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "governance-run/tools/verify.py"), "--round", round_],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    result = json.loads(done.stdout)
    assert (result["green"], result["round"]) == (green, int(round_))
