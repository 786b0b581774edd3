"""`make run` helpers: which examples, which ports, and publishing them once."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from trinity_cli import devrun
from trinity_cli.local_suite import LocalSuite
from trinity_platform.testing.ports import free_port, port_is_open


def test_the_examples_of_the_repository_are_found() -> None:
    names = [path.parent.name for path in devrun.example_files(devrun.REPOSITORY)]
    assert names == ["governance-run", "pull-request-ci", "research-review", "weekly-report"]


def test_the_executor_configuration_defaults_to_the_examples(tmp_path: Path) -> None:
    assert devrun.default_executor_config({}) == devrun.REPOSITORY / "examples" / "executor.yaml"
    own = tmp_path / "mine.yaml"
    assert devrun.default_executor_config({"TRINITY_EXECUTOR_CONFIG": str(own)}) == own


def test_ports_come_from_the_listen_addresses() -> None:
    ports = devrun.listen_ports({"TRINITY_WORK_LISTEN": "127.0.0.1:6000"})
    assert ports == {"definition": 7401, "execution": 7402, "approval": 7403, "work": 6000}


def test_examples_are_published_once_and_failures_do_not_stop_the_rest(
    fake, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good" / "process.yaml"
    bad = tmp_path / "bad" / "process.yaml"
    for path, text in ((good, "name: good\n"), (bad, "name: bad-one\n")):
        path.parent.mkdir()
        path.write_text(text)
    lines = devrun.publish_examples([bad, good], fake.target)
    assert lines[0].startswith("  bad: kept as draft bad-one rev 1 (not published: 2 problems) [")
    assert lines[1] == "  good 1.0 (published)"


def test_the_demo_identities_are_shown() -> None:
    line = devrun._identities(devrun.DEMO_TOKENS)
    assert "reviewer-token = reviewer@example.com" in line
    assert "lead-token = lead@example.com" in line
    assert (
        devrun._identities("t=someone")
        == "Identities: 1 bearer token(s) from TRINITY_AUTH_TOKENS.\n"
    )


def test_a_nats_already_running_is_reused_and_said_so(tmp_path: Path, nats_url: str) -> None:
    suite = LocalSuite(data_dir=tmp_path, nats_url=nats_url)
    assert suite.ensure_nats() is False  # it answers: nothing started
    assert devrun.nats_state(suite, tmp_path).startswith("(reused: it was running already")
    assert suite.running == {}


def test_make_run_passes_args_to_the_launcher() -> None:
    root = Path(__file__).resolve().parents[3]
    dry = subprocess.run(
        ["make", "-n", "-s", "run", "ARGS=--executors 2 --no-examples"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert "-m trinity_cli.devrun --executors 2 --no-examples" in dry.stdout


def test_a_second_make_run_refuses_in_one_line_and_starts_nothing(
    tmp_path: Path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    nats_port = free_port()
    monkeypatch.setenv("TRINITY_NATS_URL", f"nats://127.0.0.1:{nats_port}")
    with socket.socket() as first:  # the definition port of a running suite
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        monkeypatch.setenv("TRINITY_DEFINITION_LISTEN", f"127.0.0.1:{port}")
        code = devrun.main(["--data-dir", str(tmp_path / "data")])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"make run: the definition service's port {port} is already in use (127.0.0.1:{port}): "
        "is another instance running? Stop it, or choose another address with "
        "TRINITY_DEFINITION_LISTEN"
    ]
    assert not port_is_open("127.0.0.1", nats_port)  # no NATS was started
    assert not (tmp_path / "data").exists()
