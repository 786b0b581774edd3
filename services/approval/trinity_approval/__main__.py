"""``python -m trinity_approval``: serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from trinity_approval.bootstrap import bootstrap


def main() -> None:
    asyncio.run(bootstrap().runtime.run_forever())


if __name__ == "__main__":
    main()
