"""A private PgBouncer in transaction pooling mode in front of a PostgreSQL server.

Configured as deploy/README.md recommends: ``pool_mode = transaction`` and
``server_reset_query = DISCARD ALL`` run after every transaction, so nothing a
client leaves on a server connection (prepared statements, session settings,
session advisory locks) outlives its transaction.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from trinity_platform.testing.ports import free_port, wait_for_port


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


def install_pgbouncer() -> str | None:
    """Install PgBouncer with apt-get when it is missing and this process may; its path."""
    found = find_pgbouncer()
    if found or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "pgbouncer"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return find_pgbouncer()


class PgBouncer:
    """``start()`` PgBouncer on a free port for the server of ``admin_url``."""

    def __init__(self, binary: str, admin_url: str, pool_size: int = 4) -> None:
        self.binary = binary
        self.server = make_url(admin_url)
        # Its own folder under /tmp: PgBouncer drops root privileges to "nobody", who
        # cannot enter pytest's private temporary folders.
        self.directory = Path(tempfile.mkdtemp(prefix="trinity-pgbouncer-"))
        self.pool_size = pool_size
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        """The URL of ``database`` through PgBouncer."""
        return self.server.set(
            drivername="postgresql", host="127.0.0.1", port=self.port, database=database
        ).render_as_string(hide_password=False)

    def start(self) -> None:
        self.directory.chmod(0o777)
        server = self.server
        user = server.username or "postgres"
        password = f" password={server.password}" if server.password else ""
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={server.host or '127.0.0.1'} port={server.port or 5432} "
            f"user={user}{password}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "auth_type = any\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\nmax_client_conn = 500\n"
            "server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
            f"pidfile = {self.directory / 'pgbouncer.pid'}\n"
        )
        config.chmod(0o644)
        argv = [self.binary, str(config)]
        if os.geteuid() == 0:
            argv[1:1] = ["-u", "nobody"]
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"pgbouncer did not start: {self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        log = self.directory / "pgbouncer.log"
        return "\n".join(log.read_text().splitlines()[-lines:]) if log.exists() else "(no log)"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
