"""pytest plugin: no process a test started outlives the test session.

The session puts ``TRINITY_TEST_SESSION=<id>`` in its environment, so every process a
test starts inherits it (services, executors, nats-server, tools, browsers), whether
or not it runs in a session of its own. When the session ends, the processes still
carrying the mark get a moment to finish, then are killed, and each is reported with
its command line and data folder (which names the test that started it). A test's
process that outlived ``make test`` once held a port ``make run`` needed.

Only the outermost session checks: a pytest run inside a test inherits the mark and
leaves the accounting to its parent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

MARK = "TRINITY_TEST_SESSION"
GRACE_SECONDS = 5.0
_session: dict[str, str] = {}


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str
    data_dir: str


def _environ(pid: str) -> dict[str, str]:
    try:
        raw = (Path("/proc") / pid / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, _, v in pairs}


def leftovers(mark: str) -> list[Leftover]:
    """The live processes (not zombies) started under ``mark``, other than this one."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        env = _environ(entry.name)
        if env.get(MARK) != mark:
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError):
            continue
        found.append(Leftover(int(entry.name), command, env.get("TRINITY_DATA_DIR", "")))
    return found


def pytest_configure(config: pytest.Config) -> None:
    if MARK in os.environ:  # a session inside a test: the outer one keeps count
        return
    mark = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.environ[MARK] = mark
    _session["mark"] = mark


def pytest_unconfigure(config: pytest.Config) -> None:
    mark = _session.pop("mark", None)
    if mark is None:
        return
    deadline = time.monotonic() + GRACE_SECONDS
    left = leftovers(mark)
    while left and time.monotonic() < deadline:  # stops under way finish first
        time.sleep(0.1)
        left = leftovers(mark)
    for each in left:
        with contextlib.suppress(OSError):  # it ended meanwhile
            os.kill(each.pid, signal.SIGKILL)
    if left:
        lines = [f"{len(left)} process(es) outlived the test session; killed:"]
        lines += [
            f"  pid {p.pid}: {p.command[:200]}" + (f" (data {p.data_dir})" if p.data_dir else "")
            for p in left
        ]
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "leaked processes", red=True)
            for line in lines:
                reporter.write_line(line)
        else:
            print("\n".join(lines))
