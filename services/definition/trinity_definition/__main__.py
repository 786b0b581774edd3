"""``python -m trinity_definition``: serve the DefinitionService until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from trinity_definition.bootstrap import bootstrap


def main() -> None:
    asyncio.run(bootstrap().run_forever())


if __name__ == "__main__":
    main()
