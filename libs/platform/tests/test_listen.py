"""A service never shares its port, says so in one line, and `--help` only helps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trinity_platform.grpc_server import ListenError, build_server, check_listen_address


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def test_a_second_server_on_the_same_port_is_refused() -> None:
    # gRPC sets SO_REUSEPORT by default: without the guard both would listen.
    first = build_server("127.0.0.1:0", [])
    await first.start()
    try:
        with pytest.raises(ListenError, match=f"port {first.port} is already in use"):
            build_server(f"127.0.0.1:{first.port}", [])
    finally:
        await first.stop(None)


def test_a_port_another_process_listens_on_is_refused(taken_port: int) -> None:
    with pytest.raises(ListenError) as refused:
        check_listen_address(f"127.0.0.1:{taken_port}", "TRINITY_WORK_LISTEN")
    assert str(refused.value) == (
        f"port {taken_port} is already in use (127.0.0.1:{taken_port}): is another instance "
        "running? Stop it, or choose another address with TRINITY_WORK_LISTEN"
    )
    check_listen_address("127.0.0.1:0")  # any free port is never in use
    with pytest.raises(ListenError, match="expected HOST:PORT"):
        check_listen_address("nowhere")


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_service_on_a_port_in_use_exits_with_one_line(taken_port: int, tmp_path: Path) -> None:
    env = dict(
        os.environ,
        TRINITY_DEFINITION_LISTEN=f"127.0.0.1:{taken_port}",
        TRINITY_DATA_DIR=str(tmp_path / "data"),
        TRINITY_NATS_URL="nats://127.0.0.1:1",  # never reached: it refuses first
    )
    done = _run(["trinity_definition"], env, tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"python -m trinity_definition: port {taken_port} is already in use")
    assert "TRINITY_DEFINITION_LISTEN" in line
    assert not (tmp_path / "data" / "definition.db").exists()  # no database was touched


@pytest.mark.parametrize(
    "module",
    ["trinity_definition", "trinity_execution", "trinity_approval", "trinity_work"],
)
def test_help_prints_help_and_starts_nothing(module: str, tmp_path: Path) -> None:
    env = dict(os.environ, TRINITY_DATA_DIR=str(tmp_path / "data"))
    done = _run([module, "--help"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module}")
    service = module.removeprefix("trinity_").upper()
    assert f"TRINITY_{service}_LISTEN" in done.stdout
    assert not (tmp_path / "data").exists()


def test_the_executor_has_help_too(tmp_path: Path) -> None:
    done = _run(["trinity_work.executor", "--help"], dict(os.environ), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "TRINITY_EXECUTOR_CONFIG" in done.stdout
