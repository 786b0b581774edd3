"""The test session kills and reports what its tests left running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trinity_platform.testing.leaks import MARK

LEAKY = """
import subprocess, sys

def test_leaves_a_process_behind(tmp_path):
    (tmp_path.parent / "pid").write_text(str(subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    ).pid))
"""


def test_a_process_that_outlives_the_session_is_killed_and_reported(tmp_path: Path) -> None:
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    env = {k: v for k, v in os.environ.items() if k != MARK}  # a session of its own
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "trinity_platform.testing.leaks",
            "--basetemp",
            str(tmp_path / "base"),
            "test_leaky.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pid = int((tmp_path / "base" / "pid").read_text())
    assert "1 process(es) outlived the test session; killed:" in done.stdout, done.stdout
    assert f"pid {pid}: " in done.stdout and "time.sleep(600)" in done.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in _state(pid)  # gone (or a zombie)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
