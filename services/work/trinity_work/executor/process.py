"""Running a child process for a job: argv only (never a shell), bounded output, and the
whole process group killed when the job is cancelled or times out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

MAX_CAPTURE = 16 * 1024 * 1024  # bytes kept of stdout and of stderr each


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    stdout: str
    stderr: str


async def _read(stream: asyncio.StreamReader | None) -> bytes:
    if stream is None:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            break
        if size < MAX_CAPTURE:
            chunks.append(chunk[: MAX_CAPTURE - size])
            size += len(chunk)
    return b"".join(chunks)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_process(
    argv: list[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> ProcessResult:
    """Run ``argv`` to its end; cancelling the caller kills the process and its children.

    Raises ``FileNotFoundError`` / ``PermissionError`` when the program cannot start.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so we can kill the whole tree
    )
    try:
        if stdin is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin.encode())
                await proc.stdin.drain()
            proc.stdin.close()
        out, err = await asyncio.gather(_read(proc.stdout), _read(proc.stderr))
        returncode = await proc.wait()
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5.0)
        raise
    _kill_group(proc)  # children it left behind
    return ProcessResult(returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def tail(text: str, limit: int = 10_000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]
