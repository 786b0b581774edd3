"""Both seed examples end to end, driving `trinity-process` as a subprocess.

The whole suite runs as real processes (LocalSuite: free ports, a private NATS, a
temporary data folder, the examples' executor configuration and demo tokens). The
CLI applies and publishes the examples, runs them, approves as the approvers
(bearer tokens), and reads the outcome back through `--output json`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trinity_cli.devrun import DEMO_TOKENS
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# make run's demo identities, plus the one the CLI uses where a test names none
TOKENS = (
    DEMO_TOKENS
    + ",cli-token=cli@example.com:author+operator+viewer,viewer-token=vera@example.com:viewer"
    + ",admin-token=ada@example.com:admin"
)
DEADLINE = 90.0


@dataclass
class Cli:
    """`trinity-process` as a user runs it, pointed at one suite."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, token: str = "cli-token", check: int | None = 0) -> Any:
        env = dict(self.env, TRINITY_TOKEN=token)
        done = subprocess.run(
            [sys.executable, "-m", "trinity_cli", *args],
            env=env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in done.stderr, done.stderr
        if check is not None:
            assert done.returncode == check, (args, done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str, token: str = "cli-token") -> Any:
        return json.loads(self(*args, "-o", "json", token=token).stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "trinity_cli", *args],
            env=dict(self.env, TRINITY_TOKEN="cli-token"),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@dataclass
class Running:
    suite: LocalSuite
    cli: Cli
    data_dir: Path


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One suite for the module: its own NATS, SQLite databases and executor."""
    root = tmp_path_factory.mktemp("cli-e2e")
    nats = NatsServer(root / "nats")
    nats.start()
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=nats.url,
        ports={service: free_port() for service in SERVICES},
        executor_config=EXAMPLES / "executor.yaml",
        extra_env={"TRINITY_AUTH_TOKENS": TOKENS},
    )
    env = dict(os.environ, TRINITY_NATS_URL=nats.url)
    for service in SERVICES:
        env[f"TRINITY_{service.upper()}_TARGET"] = f"127.0.0.1:{suite.ports[service]}"
    try:
        suite.start()
        suite.wait_healthy(120)
        yield Running(suite, Cli(env, root), root / "data")
    finally:
        suite.stop()
        nats.stop()


def wait_for(what: str, probe: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def pending_approval(cli: Cli, execution_id: str, step_id: str, iteration: int = 1) -> str:
    """The id of the pending approval of a step (iteration), once the engine asked for it."""

    def probe() -> str:
        approvals = cli.json("approvals", "list", "--execution", execution_id)["approvals"]
        for approval in approvals:
            pending = approval["status"] == "APPROVAL_STATUS_PENDING"
            if pending and approval["step_id"] == step_id and approval["iteration"] == iteration:
                return str(approval["id"])
        return ""

    return str(wait_for(f"the approval of {step_id} #{iteration}", probe))


def steps_by_id(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step_id"]: step for step in execution["steps"]}


def execution_of(cli: Cli, execution_id: str) -> dict[str, Any]:
    return dict(cli.json("executions", "status", execution_id)["execution"])


def wait_until_status(cli: Cli, execution_id: str, status: str, what: str) -> None:
    wait_for(what, lambda: execution_of(cli, execution_id)["status"] == status)


def wait_until_step(cli: Cli, execution_id: str, step_id: str, status: str, what: str) -> None:
    wait_for(
        what, lambda: steps_by_id(execution_of(cli, execution_id))[step_id]["status"] == status
    )


def notifications(data_dir: Path, name: str) -> list[dict[str, Any]]:
    path = data_dir / "notifications" / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_research_review_with_a_round_of_changes(running: Running) -> None:
    cli = running.cli
    applied = cli.json(
        "definitions", "apply", str(EXAMPLES / "research-review/process.yaml"), "--publish"
    )
    assert (applied["action"], applied["definition"]["version"]) == ("published", "1.0")
    again = cli.json(
        "definitions", "apply", str(EXAMPLES / "research-review/process.yaml"), "--publish"
    )
    assert again["action"] == "unchanged"

    started = cli.json("run", "research-review", "--input", "topic=durable execution")
    execution_id = started["execution"]["id"]

    first = pending_approval(cli, execution_id, "review")
    cli("executions", "pause", execution_id, "--reason", "look first", token="lead-token")
    cli("executions", "resume", execution_id, token="reviewer-token")
    refused = cli("approvals", "approve", first, token="lead-token", check=1)
    assert "PERMISSION_DENIED NOT_AN_APPROVER" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    cli(
        "approvals",
        "request-changes",
        first,
        "--comment",
        "cite your sources",
        token="reviewer-token",
    )

    second = pending_approval(cli, execution_id, "review", iteration=2)
    cli("approvals", "approve", second, "--comment", "good now", token="reviewer-token")

    watched = cli("executions", "watch", execution_id, "--timeout", str(DEADLINE))
    assert "decide chose research (exclusive)" in watched.stdout
    assert "paused by lead@example.com: look first" in watched.stdout  # who, not "-"
    assert "resumed by reviewer@example.com" in watched.stdout
    assert "review completed · iteration 2 · approved" in watched.stdout

    execution = cli.json("executions", "status", execution_id)["execution"]
    assert execution["status"] == "EXECUTION_STATUS_COMPLETED"
    assert execution["total_cost"]["nanos"] == 500_000_000  # two research rounds at 0.25 USD
    steps = steps_by_id(execution)
    assert steps["research"]["iteration"] == 2
    assert steps["research"]["output"].startswith("Revised with the reviewer's feedback")
    assert (steps["review"]["decision"], steps["review"]["iteration"]) == ("approved", 2)
    assert steps["report_rejection"]["status"] == "STEP_STATUS_SKIPPED"
    assert steps["publish"]["status"] == "STEP_STATUS_COMPLETED"
    (published,) = notifications(running.data_dir, "research-review.jsonl")
    assert published["subject"] == "Research on durable execution"
    assert published["message"].startswith("Approved by reviewer@example.com: Revised")


def test_governance_run_loops_until_green_and_releases(running: Running) -> None:
    cli = running.cli
    cli("definitions", "apply", str(EXAMPLES / "governance-run/process.yaml"), "--publish")
    run = (
        "run",
        "governance-run",
        "--input",
        "request=add invoice export",
        "--input",
        "component=billing-api",
        "--idempotency-key",
        "governance-e2e-1",
    )
    execution_id = cli.json(*run)["execution"]["id"]
    assert cli.json(*run)["execution"]["id"] == execution_id  # a retry: the same execution

    watcher = cli.popen("executions", "watch", execution_id, "--timeout", str(DEADLINE))
    try:
        gate = pending_approval(cli, execution_id, "requirement_gate")
        cli("approvals", "approve", gate, "--comment", "stable", token="lead-token")
        release = wait_for(
            "the release gate",
            lambda: [
                a["id"]
                for a in cli.json("approvals", "list", "--approver", "lead@example.com")[
                    "approvals"
                ]
                if a["execution_id"] == execution_id and a["step_id"] == "release_gate"
            ],
        )[0]
        (title,) = [
            a["title"]
            for a in cli.json("approvals", "list", "--execution", execution_id)["approvals"]
            if a["id"] == release
        ]
        assert title == "Release billing-api? Checks green in round 2."  # not "round 2.0"
        cli("approvals", "approve", release, token="lead-token")
        out, err = watcher.communicate(timeout=DEADLINE)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, (out, err)
    assert "checks chose code (exclusive)" in out
    assert "checks chose release_gate (exclusive) · iteration 2" in out

    execution = cli.json("executions", "status", execution_id)["execution"]
    assert execution["status"] == "EXECUTION_STATUS_COMPLETED"
    steps = steps_by_id(execution)
    assert steps["verify"]["iteration"] == 2
    assert steps["verify"]["structured_output"]["green"] is True
    assert steps["code"]["iteration"] == 2
    assert steps["release_gate"]["decision"] == "approved"
    assert steps["publish"]["structured_output"]["image"].startswith(
        "registry.example.com/billing-api@sha256:"
    )
    # 0.30 (triage) + 2 x 0.60 (code) = 1.50 USD of a 5.00 USD budget.
    assert (execution["total_cost"]["units"], execution["total_cost"]["nanos"]) == (
        "1",
        500_000_000,
    )
    work = cli.json("work", "list", "--execution", execution_id, "--kind", "tool_run")["work"]
    assert len(work) == 4  # scaffold, verify twice, publish
    (announced,) = notifications(running.data_dir, "governance-run.jsonl")
    assert announced["subject"] == "billing-api released"

    facts = cli(
        "facts",
        "tail",
        "--execution",
        execution_id,
        "--service",
        "execution",
        "--idle",
        "2",
        "-o",
        "json",
    )
    types = [json.loads(line)["type"].rsplit(".", 1)[1] for line in facts.stdout.splitlines()]
    assert types[0] == "ProcessStarted" and types[-1] == "ProcessCompleted"
    assert types.count("GatewayEvaluated") == 2


NUMBERS = """\
name: numbers
steps:
  - id: score
    agent_task: {agent: echo, message: '{"score": 90, "ratio": 0.5}'}
  - id: say
    depends_on: [score]
    agent_task:
      agent: echo
      message: "n={{ input.n }} half={{ input.half }} items={{ input.items }} score={{ steps.score.output.score }}"
"""


def test_integers_stay_integers_in_templates_outputs_json_and_facts(
    running: Running, tmp_path: Path
) -> None:
    cli = running.cli
    process = tmp_path / "numbers.yaml"
    process.write_text(NUMBERS)
    cli("definitions", "apply", str(process), "--publish")
    run = ("run", "numbers", "--input", "n:=3", "--input", "half:=2.5", "--input", "items:=[1,2]")
    done = cli(*run, "--wait", "-o", "json")
    execution = json.loads(done.stdout)["execution"]
    steps = steps_by_id(execution)
    assert steps["say"]["output"] == "n=3 half=2.5 items=[1, 2] score=90"
    assert steps["score"]["structured_output"] == {"score": 90, "ratio": 0.5}
    for said in ('"n": 3', '"score": 90'):  # the JSON output says 3, not 3.0
        assert re.search(said + r"(?![.\d])", done.stdout), said
    inputs = {"n": 3, "half": 2.5, "items": [1, 2]}
    status = cli("executions", "status", execution["id"]).stdout
    (line,) = [x for x in status.splitlines() if x.startswith("input ")]
    assert json.loads(line.removeprefix("input")) == inputs and "3.0" not in line
    facts = cli(
        "facts", "tail", "--execution", execution["id"], "--service", "execution", "--count", "1"
    ).stdout
    (started,) = facts.splitlines()  # --count 1 stops at one
    said = re.search(r"input=(\{\S*\})", started)
    assert said is not None and json.loads(said.group(1)) == inputs and "3.0" not in started
    work = cli("work", "list", "--execution", execution["id"], "-o", "json")
    assert '"score": 90' in work.stdout


def test_refusals_of_the_real_services_are_one_line(running: Running, tmp_path: Path) -> None:
    cli = running.cli
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\nsteps:\n  - id: a\n    agent_task: {agent: x}\n    depends_on: [nowhere]\n"
    )
    validated = cli("definitions", "validate", str(broken), check=1)
    assert "depends_on" in validated.stdout and "nowhere" in validated.stdout
    refused = cli("definitions", "apply", str(broken), "--publish", check=1)
    (line,) = refused.stderr.splitlines()
    assert re.match(
        rf"trinity-process: {re.escape(str(broken))}: kept as draft broken rev 1 "
        r"\(not published: \d+ problems?\) \[",
        line,
    ), line
    assert "nowhere" in line
    again = cli("definitions", "apply", str(broken))
    assert again.stdout.startswith("draft broken rev 1 unchanged"), again.stdout
    assert cli.json("definitions", "apply", str(broken))["action"] == "unchanged"

    unparsable = tmp_path / "unparsable.yaml"
    unparsable.write_text("name: [unclosed\nsteps: []\n")
    validated = cli("definitions", "validate", str(unparsable), check=1)
    head, *problems = validated.stdout.splitlines()
    assert head == f"{unparsable}: 1 problem"
    (problem,) = problems
    assert problem.startswith("  (file): YAML syntax error at line 2, column 6"), problem

    unknown = cli("run", "no-such-process", "--wait", check=1)
    (line,) = unknown.stderr.splitlines()
    assert line == (
        "trinity-process: TriggerProcess refused by the execution service: NOT_FOUND "
        "DEFINITION_NOT_FOUND: no published process named 'no-such-process' "
        "(the published processes: trinity-process definitions list)"
    )
    as_json = cli("-o", "json", "run", "no-such-process", check=1)
    error = json.loads(as_json.stderr)["error"]
    assert (error["status"], error["reason"], error["violations"]) == (
        "NOT_FOUND",
        "DEFINITION_NOT_FOUND",
        [],
    )
    # authentication is on: no token, no answer; a viewer may not trigger
    anonymous = cli("definitions", "list", token="", check=1)
    (line,) = anonymous.stderr.splitlines()
    assert "UNAUTHENTICATED AUTHENTICATION_REQUIRED" in line
    assert line.endswith("(pass --token or set TRINITY_TOKEN)")
    denied = cli("run", "research-review", token="viewer-token", check=1)
    (line,) = denied.stderr.splitlines()
    assert "TriggerProcess refused by the execution service: PERMISSION_DENIED" in line
    assert "PERMISSION_REQUIRED" in line and "executions.trigger" in line


def test_make_run_publishes_the_examples_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`make run` (devrun) with free ports: healthy, examples published, Ctrl-C stops all."""
    ports = {service: free_port() for service in SERVICES}
    env = dict(os.environ, TRINITY_NATS_URL=f"nats://127.0.0.1:{free_port()}")
    for service, port in ports.items():
        env[f"TRINITY_{service.upper()}_LISTEN"] = f"127.0.0.1:{port}"
    ports["console"] = free_port()
    env["TRINITY_CONSOLE_LISTEN"] = f"127.0.0.1:{ports['console']}"
    devrun = subprocess.Popen(
        [sys.executable, "-m", "trinity_cli.devrun", "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(devrun.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_for("the banner", lambda: any("Ctrl-C stops everything" in x for x in lines), 150)
        banner = "".join(lines)
        assert f"NATS at {env['TRINITY_NATS_URL']}: started" in banner  # said before the services
        assert f"  NATS        {env['TRINITY_NATS_URL']} (started by make run" in banner
        for name in ("research-review", "governance-run", "weekly-report", "pull-request-ci"):
            assert f"  {name} 1.0 (published)" in banner, banner
        assert f"console     http://127.0.0.1:{ports['console']}/" in banner, banner
        devrun.send_signal(signal.SIGINT)
        devrun.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if devrun.poll() is None:
            devrun.kill()
            devrun.wait()
    rest = "".join(lines)
    assert devrun.returncode == 0, rest
    assert rest.rstrip().endswith("stopped.")
    for port in ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_declared_inputs_are_shown_and_checked_by_run(running: Running, tmp_path: Path) -> None:
    cli = running.cli
    typed = tmp_path / "typed.yaml"
    typed.write_text(
        """
name: typed-inputs
inputs:
  topic: {type: string, required: true, description: what to research}
  rounds: {type: integer, default: 2}
steps:
  - id: research
    agent_task: {agent: researcher, message: "{{ input.topic }} in {{ input.rounds }} rounds"}
"""
    )
    cli("definitions", "apply", str(typed), "--publish")
    shown = cli("definitions", "show", "typed-inputs").stdout.splitlines()
    assert [line.split(None, 1)[1] for line in shown if line.startswith("input ")] == [
        "topic (string, required) · what to research",
        "rounds (integer, default 2)",
    ]
    refused = cli("run", "typed-inputs", "--input", "rounds=two", "--input", "colour=red", check=1)
    (line,) = refused.stderr.splitlines()
    assert "INVALID_ARGUMENT INPUT_INVALID" in line
    assert (
        "[input.topic: is required (a string: what to research); "
        "input.rounds: must be an integer, got the text 'two'; "
        "input.colour: is not an input of this process; it declares topic, rounds]"
    ) in line
    execution_id = cli("run", "typed-inputs", "--input", "topic=agents").stdout.strip()
    wait_until_status(cli, execution_id, "EXECUTION_STATUS_COMPLETED", "the typed execution")


def test_pull_request_ci_waits_for_ci_results_sent_with_signal(running: Running) -> None:
    cli = running.cli
    cli("definitions", "apply", str(EXAMPLES / "pull-request-ci" / "process.yaml"), "--publish")
    execution_id = cli("run", "pull-request-ci", "--input", "change=retry uploads").stdout.strip()

    def waits_for_ci() -> bool:
        execution = cli.json("executions", "status", execution_id)["execution"]
        return steps_by_id(execution)["ci"]["status"] == "STEP_STATUS_WAITING"

    wait_for("the wait for CI", waits_for_ci)
    shown = cli("executions", "status", execution_id).stdout
    assert "awaits ci-result (key 101)" in shown
    failed = cli("executions", "signal", "ci-result", "--key", "101", "--field", "status=failure")
    assert failed.stdout.startswith(f"delivered to step ci of execution {execution_id}")
    # The agent pushes a fix (round 2) and the process waits for CI again.
    wait_for(
        "the second wait for CI",
        lambda: (
            waits_for_ci()
            and steps_by_id(cli.json("executions", "status", execution_id)["execution"])["ci"][
                "iteration"
            ]
            == 2
        ),
    )
    cli("executions", "signal", "ci-result", "--key", "101", "--field", "status=success")
    wait_until_status(cli, execution_id, "EXECUTION_STATUS_COMPLETED", "the merge")
    merged = notifications(running.data_dir, "pull-requests.jsonl")
    assert "merged pull request 101 after 2 round(s)" in merged[-1]["message"]
    # Nothing waits any more and the sender will not wait: refused in one line.
    late = cli(
        "executions", "signal", "ci-result", "--key", "101", "--ttl", "0", "--field", "x=1", check=1
    )
    assert "NOT_FOUND NO_MESSAGE_SUBSCRIBER" in late.stderr


MIGRATING = """
name: cli-migrating
steps:
  - id: hold
    wait_for_message: {message: go, correlation_key: "cli-migrating-{{ input.n }}"}
  - id: tell
    depends_on: [hold]
    notification: {channel: file, target: migrated.jsonl, message: "v1 {{ input.n }}"}
"""


def test_executions_migrate_moves_a_waiting_execution_to_a_new_version(
    running: Running, tmp_path: Path
) -> None:
    cli = running.cli
    v1 = tmp_path / "v1.yaml"
    v1.write_text(MIGRATING)
    cli("definitions", "apply", str(v1), "--publish")
    execution_id = cli("run", "cli-migrating", "--input", "n:=7").stdout.strip()
    wait_until_step(cli, execution_id, "hold", "STEP_STATUS_WAITING", "the wait")
    v2 = tmp_path / "v2.yaml"
    v2.write_text(
        MIGRATING.replace('"v1 {{ input.n }}"', '"v2 {{ input.n }} {{ steps.hold.output.word }}"')
    )
    cli("definitions", "apply", str(v2), "--publish")
    version = cli.json("executions", "status", execution_id)["execution"]["process_version"]
    # v3 renames the waiting step: refused, named, exit 1
    v3 = tmp_path / "v3.yaml"
    v3.write_text(MIGRATING.replace("id: hold", "id: pause").replace("[hold]", "[pause]"))
    cli("definitions", "apply", str(v3), "--publish")
    # an operator may not migrate; an admin may
    denied = cli("executions", "migrate", "--execution", execution_id, "--to", "1.1", check=1)
    assert "executions.migrate" in denied.stderr
    admin = "admin-token"
    refused = cli(
        "executions",
        "migrate",
        "--execution",
        execution_id,
        "--to",
        "1.2",
        "--dry-run",
        check=1,
        token=admin,
    )
    assert "cannot move" in refused.stdout and "STEP_HAS_NO_COUNTERPART (hold)" in refused.stdout
    dry = cli(
        "executions",
        "migrate",
        "--process",
        "cli-migrating",
        "--from",
        version,
        "--to",
        "1.1",
        "--dry-run",
        token=admin,
    )
    assert dry.stdout.strip() == f"{execution_id}: can move to 1.1"
    moved = cli("executions", "migrate", "--execution", execution_id, "--to", "1.1", token=admin)
    assert moved.stdout.strip() == f"{execution_id}: moved to 1.1"
    cli("executions", "signal", "go", "--key", "cli-migrating-7", "--field", "word=yes")
    wait_until_status(cli, execution_id, "EXECUTION_STATUS_COMPLETED", "the completion")
    assert notifications(running.data_dir, "migrated.jsonl")[-1]["message"] == "v2 7 yes"
    watched = cli("executions", "watch", execution_id).stdout
    assert f"moved from version {version} to 1.1 by" in watched


COMPENSATING = """
name: cli-compensating
steps:
  - id: reserve
    notification: {channel: file, target: reserved.jsonl, message: "reserve {{ input.n }}"}
    compensate:
      notification: {channel: file, target: released.jsonl, message: "release {{ input.n }}"}
  - id: hold
    depends_on: [reserve]
    wait_for_message: {message: go, correlation_key: "cli-compensating-{{ input.n }}"}
"""


def test_executions_cancel_compensate_undoes_and_status_and_watch_show_it(
    running: Running, tmp_path: Path
) -> None:
    cli = running.cli
    definition = tmp_path / "compensating.yaml"
    definition.write_text(COMPENSATING)
    cli("definitions", "apply", str(definition), "--publish")
    execution_id = cli("run", "cli-compensating", "--input", "n:=3").stdout.strip()
    wait_until_step(cli, execution_id, "hold", "STEP_STATUS_WAITING", "the wait")
    cancelled = cli("executions", "cancel", execution_id, "--reason", "undo", "--compensate")
    assert cancelled.stdout.startswith(f"cancelled {execution_id}: now compensating")
    watched = cli("executions", "watch", execution_id, check=5).stdout
    assert "compensating (cancellation): undoing reserve" in watched
    assert "reserve compensated" in watched
    assert "compensation completed · 1 undone" in watched
    assert "compensation cancellation: 1/1 undone" in watched.splitlines()[-1]
    shown = cli("executions", "status", execution_id).stdout
    assert "compensation  cancellation: 1/1 undone" in shown
    assert "UNDO" in shown and "compensated" in shown
    assert notifications(running.data_dir, "released.jsonl")[-1]["message"] == "release 3"
