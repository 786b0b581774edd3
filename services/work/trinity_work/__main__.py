"""``python -m trinity_work``: run the work service until SIGTERM/SIGINT."""

from __future__ import annotations

from trinity_platform.entrypoint import service_main
from trinity_work.bootstrap import bootstrap


async def serve() -> None:
    await bootstrap().runtime.run_forever()


def main() -> None:
    service_main(
        "work",
        "The work service: agent tasks, tool runs and notifications for the executors "
        "(gRPC trinity.process.work.v1.WorkService; executors: python -m trinity_work.executor).",
        serve,
    )


if __name__ == "__main__":
    main()
