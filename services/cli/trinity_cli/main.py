"""The `trinity-process` entry point.

Everything is imported inside the guard, so even Ctrl-C while the CLI starts ends
with one line and exit code 130, never a traceback. The work is in
:mod:`trinity_cli.app`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    try:
        from trinity_cli.app import run

        return run(argv)
    except KeyboardInterrupt:
        print("trinity-process: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
