"""``python -m trinity_approval``: serve until SIGTERM/SIGINT."""

from __future__ import annotations

from trinity_approval.bootstrap import bootstrap
from trinity_platform.entrypoint import service_main


async def serve() -> None:
    await bootstrap().runtime.run_forever()


def main() -> None:
    service_main(
        "approval",
        "The approval service: human approvals, their deadlines and decisions "
        "(gRPC trinity.process.approval.v1.ApprovalService).",
        serve,
    )


if __name__ == "__main__":
    main()
