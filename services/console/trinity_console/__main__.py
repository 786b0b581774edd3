"""``python -m trinity_console``: serve the web console until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

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


def main() -> int:
    configure_logging(os.environ.get("TRINITY_LOG_LEVEL") or "INFO")
    try:
        settings = load_settings()
    except ValueError as error:  # a bad setting: say which, in one line
        print(f"trinity_console: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except OSError as error:  # the port is taken, or not an address of this host
        print(
            f"trinity_console: cannot listen on {settings.host}:{settings.port}: "
            f"{error.strerror or error} (set TRINITY_CONSOLE_LISTEN)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
