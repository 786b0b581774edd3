"""``python -m trinity_work``: run the work service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from trinity_work.bootstrap import bootstrap


def main() -> None:
    asyncio.run(bootstrap().runtime.run_forever())


if __name__ == "__main__":
    main()
