"""``python -m trinity_console``: serve the web console until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal

from aiohttp import web

from trinity_console.app import create_app
from trinity_console.settings import ConsoleSettings, load_settings
from trinity_platform.logs import configure_logging, get_logger

_log = get_logger("trinity_console")


async def serve(settings: ConsoleSettings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if not settings.authentication:
        _log.warning("authentication is off (TRINITY_AUTH_TOKENS unset): anyone may sign in")
    _log.info("console listening", url=f"http://{settings.host}:{settings.port}/")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    configure_logging(os.environ.get("TRINITY_LOG_LEVEL") or "INFO")
    asyncio.run(serve(load_settings()))


if __name__ == "__main__":
    main()
