"""SQLite's WAL is checkpointed by a thread of its own, never inside a commit on the loop.

With statements on the event loop (:mod:`trinity_platform.sqlite_inline`), SQLite's
automatic checkpoint runs inside whichever commit crosses ``wal_autocheckpoint`` pages:
that commit copies the WAL into the database file and syncs it, stalling the whole
loop for 10-80 ms about every 500th commit (the fact-lag tail measured for issue 14).
So an engine's own connections turn the automatic checkpoint off, and this thread runs
a PASSIVE checkpoint (it never waits for, nor blocks, a reader or a writer) once the
WAL has grown past the same threshold and was written since the last checkpoint.
sqlite3 releases the GIL while it copies and syncs, so the loop keeps running.

If the thread stops (the engine disposed or garbage-collected, the file removed), the
last connection to close checkpoints and removes the WAL, as SQLite always does.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from typing import Any

from trinity_platform.logs import get_logger

_log = get_logger(__name__)

# SQLite's own default for wal_autocheckpoint, in pages.
THRESHOLD_PAGES = 1000
POLL_INTERVAL_S = 0.5


class WalCheckpointer:
    """Checkpoints ``database``'s WAL from a daemon thread while ``owner`` lives."""

    def __init__(
        self,
        database: str,
        owner: Any,
        *,
        threshold_pages: int = THRESHOLD_PAGES,
        interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self._database = database
        self._wal = database + "-wal"
        self._owner = weakref.ref(owner)
        self._threshold_pages = threshold_pages
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self.checkpoints = 0
        """Checkpoints run so far (read by tests)."""
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpoint {os.path.basename(database)}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        checkpointed_at: int | None = None
        try:
            while not self._stopped.wait(self._interval_s):
                if self._owner() is None or not os.path.exists(self._database):
                    return
                try:
                    wal = os.stat(self._wal)
                except FileNotFoundError:
                    continue
                if wal.st_mtime_ns == checkpointed_at:
                    continue
                if connection is None:
                    connection = sqlite3.connect(
                        self._database, timeout=0, isolation_level=None, check_same_thread=False
                    )
                    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
                    threshold_bytes = self._threshold_pages * page_size
                if wal.st_size < threshold_bytes:
                    continue
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:  # e.g. a reader mid-recovery: next turn
                    _log.debug("wal checkpoint skipped", error=str(error))
                    continue
                self.checkpoints += 1
                checkpointed_at = wal.st_mtime_ns
        except Exception as error:  # never take the process down; SQLite still copes
            _log.warning("wal checkpointer stopped", error=str(error))
        finally:
            if connection is not None:
                connection.close()
