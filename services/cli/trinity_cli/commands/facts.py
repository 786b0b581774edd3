"""`facts tail` (the subscriber itself is :mod:`trinity_cli.facts_tail`)."""

from __future__ import annotations

import argparse
from typing import Any

from trinity_cli.client import SERVICES
from trinity_cli.context import Context


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("facts", help="what happened, from the facts streams on NATS")
    sub = group.add_subparsers(dest="facts_command", metavar="COMMAND")
    sub.required = True
    tail_ = sub.add_parser(
        "tail",
        parents=[common],
        help="print facts as they happen, decoded by their ce-type",
        description="Print the facts of the services from the start of their streams "
        "(--new: only from now), then follow them until Ctrl-C.",
    )
    tail_.add_argument(
        "--service",
        action="append",
        choices=SERVICES,
        help="only facts of this service (repeatable; default: all four)",
    )
    tail_.add_argument("--execution", metavar="ID", help="only facts of this execution")
    tail_.add_argument("--new", action="store_true", help="only facts emitted from now on")
    tail_.add_argument("--count", type=int, default=0, help="stop after this many facts")
    tail_.add_argument(
        "--idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop when no fact arrived for this long (default: follow forever)",
    )
    tail_.set_defaults(func=tail_facts)


def tail_facts(ctx: Context) -> int:
    from trinity_cli.facts_tail import tail_facts as run

    return run(ctx)
