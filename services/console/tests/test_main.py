"""``python -m trinity_console`` refuses a bad setting or a taken port in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def run_console(listen: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRINITY_CONSOLE_LISTEN": listen}
    return subprocess.run(
        [sys.executable, "-m", "trinity_console"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_bad_listen_address_is_refused_in_one_line() -> None:
    result = run_console("nowhere")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trinity_console: TRINITY_CONSOLE_LISTEN must look like 'host:port', got 'nowhere'"
    ]


def test_a_taken_port_is_refused_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_console(f"127.0.0.1:{port}")
    assert result.returncode == 1
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("trinity_console:")]
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "Traceback" not in result.stderr
