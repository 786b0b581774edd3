"""``python -m trinity_definition``: serve the DefinitionService until SIGTERM/SIGINT."""

from __future__ import annotations

from trinity_definition.bootstrap import bootstrap
from trinity_platform.entrypoint import service_main


async def serve() -> None:
    await bootstrap().run_forever()


def main() -> None:
    service_main(
        "definition",
        "The definition service: process definitions, drafts and published versions "
        "(gRPC trinity.process.definition.v1.DefinitionService).",
        serve,
    )


if __name__ == "__main__":
    main()
