"""Arguments, inputs and formatting: no service needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from trinity.process.common.v1 import types_pb2
from trinity_cli.app import build_parser
from trinity_cli.errors import UsageError
from trinity_cli.inputs import parse_inputs
from trinity_cli.render import duration, money

EVERY_COMMAND = [
    ["definitions", "apply", "p.yaml", "--publish"],
    ["definitions", "validate", "p.yaml"],
    ["definitions", "list"],
    ["definitions", "show", "it3", "--version", "1.0"],
    ["definitions", "archive", "it3", "--version", "1.0"],
    ["run", "it3", "--version", "1.0", "--input", "topic=x", "--input-file", "f.yaml", "--wait"],
    ["run", "it3", "--idempotency-key", "k1", "--watch", "--timeout", "30"],
    ["executions", "status", "exe-1"],
    ["executions", "list", "--process", "it3", "--status", "running"],
    ["executions", "cancel", "exe-1", "--reason", "wrong input"],
    ["executions", "pause", "exe-1"],
    ["executions", "resume", "exe-1"],
    ["executions", "retry", "exe-1"],
    ["executions", "watch", "exe-1"],
    ["approvals", "list", "--approver", "alice@example.com"],
    ["approvals", "approve", "apr-1", "--comment", "fine"],
    ["approvals", "reject", "apr-1"],
    ["approvals", "request-changes", "apr-1"],
    ["work", "list", "--execution", "exe-1"],
    ["facts", "tail", "--service", "execution", "--execution", "exe-1"],
]


@pytest.mark.parametrize("argv", EVERY_COMMAND, ids=lambda argv: " ".join(argv[:2]))
def test_every_command_of_the_issue_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)
    assert args.output == "text"


def test_common_options_go_before_or_after_the_command() -> None:
    before = build_parser().parse_args(["-o", "json", "--token", "t", "executions", "list"])
    after = build_parser().parse_args(["executions", "list", "-o", "json", "--token", "t"])
    assert (before.output, before.token) == (after.output, after.token) == ("json", "t")


def test_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRINITY_TOKEN", "from-env")
    assert build_parser().parse_args(["approvals", "list"]).token == "from-env"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["definitions"],
        ["definitions", "apply"],
        ["run", "it3", "--wait", "--watch"],
        ["executions", "cancel", "exe-1"],
        ["executions", "list", "--status", "sleeping"],
        ["-o", "yaml", "definitions", "list"],
        ["nonsense"],
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = cli(*argv)
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert result.err.startswith("trinity-process")
    assert "Traceback" not in result.err


def test_help_exits_0(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--help")
    assert result.code == 0
    assert "exit codes:" in result.out


def test_inputs_text_json_and_file(tmp_path: Path) -> None:
    file = tmp_path / "input.yaml"
    file.write_text("topic: agents\nrounds: 2\n")
    values = parse_inputs(
        ["topic=process engines", "rounds:=3", 'tags:=["a"]', "note=a=b"], str(file)
    )
    assert values == {"topic": "process engines", "rounds": 3, "tags": ["a"], "note": "a=b"}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["novalue"], "expected key=value"),
        (["=x"], "expected key=value"),
        (["n:=not json"], "not valid JSON"),
    ],
)
def test_bad_inputs_are_usage_errors(pairs: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_inputs(pairs, None)


def test_input_file_must_be_a_mapping(tmp_path: Path) -> None:
    file = tmp_path / "list.yaml"
    file.write_text("- a\n- b\n")
    with pytest.raises(UsageError, match="must be a mapping"):
        parse_inputs([], str(file))


@pytest.mark.parametrize(
    ("units", "nanos", "text"),
    [
        (0, 0, "0.00 USD"),
        (1, 500_000_000, "1.50 USD"),
        (0, 1_230_000, "0.00123 USD"),
        (12, 0, "12.00 USD"),
    ],
)
def test_money_is_exact(units: int, nanos: int, text: str) -> None:
    assert money(types_pb2.Money(currency_code="USD", units=units, nanos=nanos)) == text


def test_durations() -> None:
    assert [duration(x) for x in (0.25, 12.34, 245.0, 7380.0)] == [
        "250ms",
        "12.3s",
        "4m05s",
        "2h03m",
    ]
