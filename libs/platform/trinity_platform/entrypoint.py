"""``python -m trinity_<service>``: ``--help`` says what it is and how it is configured;
otherwise it serves until SIGTERM/SIGINT. A refusal to start that the operator can fix
(its port is in use) is one line on stderr and exit code 1,
not a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from trinity_platform.config import settings_table
from trinity_platform.grpc_server import ListenError


def settings_help(service: str) -> str:
    """The environment variables a service reads, for ``--help``."""
    lines = ["environment (every setting is a variable):"]
    for name, default, meaning in settings_table():
        lines.append(f"  {name.replace('<SERVICE>', service.upper())}")
        lines.append(f"      {meaning} (default: {default})")
    return "\n".join(lines)


def run_main(
    prog: str,
    description: str,
    serve: Callable[[], Coroutine[Any, Any, None]],
    *,
    epilog: str = "",
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the command line (only ``--help``), then run ``serve()`` to its end."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    try:
        asyncio.run(serve())
    except ListenError as error:
        print(f"{prog}: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # before the service installed its own handler
        raise SystemExit(130) from None


def service_main(
    service: str,
    description: str,
    serve: Callable[[], Coroutine[Any, Any, None]],
    argv: Sequence[str] | None = None,
) -> None:
    """:func:`run_main` for one of the four services, its settings in the help."""
    run_main(
        f"python -m trinity_{service}",
        description,
        serve,
        epilog=settings_help(service),
        argv=argv,
    )
