"""Every error path: one clear line on stderr and an exit code a script can trust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trinity.process.work.v1 import work_service_pb2
from trinity_cli.client import Clients
from trinity_cli.errors import CliError, ExitCode
from trinity_platform.testing.ports import free_port

GOOD = "name: it3\nsteps:\n  - id: research\n"


@pytest.fixture
def closed_port(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every service target points at a port nothing listens on."""
    target = f"127.0.0.1:{free_port()}"
    for service in ("definition", "execution", "approval", "work"):
        monkeypatch.setenv(f"TRINITY_{service.upper()}_TARGET", target)
    return target


UNREACHABLE = [
    (["definitions", "list"], "definition"),
    (["definitions", "show", "it3"], "definition"),
    (["run", "it3", "--wait"], "execution"),
    (["executions", "status", "exe-1"], "execution"),
    (["executions", "watch", "exe-1"], "execution"),
    (["approvals", "list"], "approval"),
    (["approvals", "approve", "apr-1"], "approval"),
    (["work", "list"], "work"),
]


@pytest.mark.parametrize(
    ("argv", "service"), UNREACHABLE, ids=lambda x: " ".join(x) if isinstance(x, list) else x
)
def test_unreachable_service_is_one_line_and_exit_3(
    cli, closed_port: str, argv: list[str], service: str
) -> None:  # type: ignore[no-untyped-def]
    result = cli(*argv)
    assert result.code == 3
    assert result.err_lines == [
        f"trinity-process: the {service} service at {closed_port} is unreachable "
        f"(connection refused); is the suite running (`make run`)? "
        f"Set TRINITY_{service.upper()}_TARGET or --{service}-target to point elsewhere"
    ]
    assert result.out == ""


def test_unreachable_as_json_is_one_json_line(cli, closed_port: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("executions", "list", "-o", "json")
    assert result.code == 3
    (line,) = result.err_lines
    error = json.loads(line)["error"]
    assert error["status"] == "UNAVAILABLE"
    assert error["exit_code"] == 3
    # the same keys always, even where there is nothing to say
    assert sorted(error) == ["exit_code", "message", "reason", "status", "violations"]
    assert (error["reason"], error["violations"]) == ("", [])


def test_unreachable_nats_is_one_line_and_exit_3(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("facts", "tail", "--nats-url", f"nats://127.0.0.1:{free_port()}")
    assert result.code == 3
    assert len(result.err_lines) == 1
    assert "NATS at nats://127.0.0.1:" in result.err and "is unreachable" in result.err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: str(tmp / "missing.yaml"), "no such file"),
        (lambda tmp: str(tmp), "is a directory"),
    ],
)
def test_unreadable_process_file_is_one_line_and_exit_2(
    cli, fake, tmp_path: Path, make, message: str
) -> None:  # type: ignore[no-untyped-def]
    for command in ("apply", "validate"):
        result = cli("definitions", command, make(tmp_path))
        assert result.code == 2
        assert len(result.err_lines) == 1
        assert message in result.err


def test_bad_input_file_is_one_line_and_exit_2(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "input.yaml"
    file.write_text("topic: [unclosed\n")
    result = cli("run", "it3", "--input-file", str(file))
    assert result.code == 2
    assert result.err_lines == [
        f"trinity-process: {file}: not valid YAML or JSON (line 2, column 1): "
        "expected ',' or ']', but got '<stream end>'"
    ]
    assert fake.executions.triggers == []


def test_unparsable_process_file_is_refused_by_the_service_in_one_line(
    cli, fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "broken.yaml"
    file.write_text("name: [unclosed\n")
    result = cli("definitions", "apply", str(file))
    assert result.code == 1
    assert result.err_lines == [
        "trinity-process: CreateDraft refused by the definition service: INVALID_ARGUMENT "
        "DEFINITION_UNPARSABLE: the process file is not valid YAML [: line 1, column 1: not YAML]"
    ]


def test_refused_call_shows_status_reason_and_every_violation(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "bad.yaml"
    file.write_text("name: bad-process\nsteps:\n  - id: a\n")
    result = cli("definitions", "apply", str(file), "--publish")
    assert result.code == 1
    assert result.err_lines == [
        f"trinity-process: {file}: kept as draft bad-process rev 1 (not published: 2 problems) "
        "[steps[1].depends_on[0]: unknown step 'nowhere'; steps[2].gateway.routes: a gateway "
        "needs routes]"
    ]


def test_refused_call_as_json_carries_reason_and_violations(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "bad.yaml"
    file.write_text("name: bad-process\n")
    result = cli("-o", "json", "definitions", "apply", str(file), "--publish")
    assert result.code == 1
    (line,) = result.err_lines
    error = json.loads(line)["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["reason"] == "DEFINITION_INVALID"
    assert [v["field"] for v in error["violations"]] == [
        "steps[1].depends_on[0]",
        "steps[2].gateway.routes",
    ]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["run", "nobody"],
            "TriggerProcess refused by the execution service: NOT_FOUND DEFINITION_NOT_FOUND: no published definition 'nobody' (the published processes: trinity-process definitions list)",
        ),
        (
            ["executions", "status", "exe-404"],
            "GetExecution refused by the execution service: NOT_FOUND EXECUTION_NOT_FOUND: no execution 'exe-404'",
        ),
        (
            ["definitions", "show", "nothing"],
            "GetDefinition refused by the definition service: NOT_FOUND DEFINITION_NOT_FOUND: no published definition 'nothing' (the published processes: trinity-process definitions list)",
        ),
        (
            ["approvals", "approve", "apr-1", "--token", "tok-bob"],
            "SubmitDecision refused by the approval service: PERMISSION_DENIED NOT_AN_APPROVER: bob@example.com is not an approver",
        ),
        (
            ["approvals", "approve", "apr-1"],
            "SubmitDecision refused by the approval service: UNAUTHENTICATED: a decision needs a bearer token (pass --token or set TRINITY_TOKEN)",
        ),
        (
            ["approvals", "reject", "apr-1", "--token", "forged"],
            "SubmitDecision refused by the approval service: UNAUTHENTICATED INVALID_TOKEN: invalid or unknown bearer token (pass --token or set TRINITY_TOKEN)",
        ),
    ],
)
def test_refusals_are_one_line_and_exit_1(cli, fake, argv: list[str], expected: str) -> None:  # type: ignore[no-untyped-def]
    result = cli(*argv)
    assert result.code == 1
    assert result.err_lines == [f"trinity-process: {expected}"]


def test_unimplemented_rpc_is_one_line(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("facts", "tail", "--help")
    assert result.code == 0
    # WorkService.GetWork is not served by the stand-in: the generated base class answers UNIMPLEMENTED.

    clients = Clients(targets={"work": fake.target})
    with pytest.raises(CliError) as caught:
        clients.call("work", "GetWork", work_service_pb2.GetWorkRequest(work_id="w"))
    clients.close()
    assert caught.value.code == ExitCode.REFUSED
    assert caught.value.status == "UNIMPLEMENTED"
    assert "does not implement GetWork" in caught.value.message


def test_the_console_script_never_shows_a_traceback(closed_port: str, tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: one line, exit 3."""
    script = Path(sys.executable).with_name("trinity-process")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "trinity_cli"]
    done = subprocess.run(
        [*command, "executions", "list"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "unreachable" in done.stderr
