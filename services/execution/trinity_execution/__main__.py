"""`python -m trinity_execution`: run the execution service until SIGTERM."""

import asyncio

from trinity_execution.bootstrap import build


async def main() -> None:
    # Built inside the running loop: grpc.aio channels bind to the loop that creates them.
    await build().run_forever()


if __name__ == "__main__":
    asyncio.run(main())
