"""``python -m trinity_execution``: run the execution service until SIGTERM/SIGINT."""

from __future__ import annotations

from trinity_execution.bootstrap import build
from trinity_platform.entrypoint import service_main


async def serve() -> None:
    # Built inside the running loop: grpc.aio channels bind to the loop that creates them.
    await build().run_forever()


def main() -> None:
    service_main(
        "execution",
        "The execution service: runs executions of published processes, their timers "
        "and triggers (gRPC trinity.process.execution.v1.ExecutionService).",
        serve,
    )


if __name__ == "__main__":
    main()
