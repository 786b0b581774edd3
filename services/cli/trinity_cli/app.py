"""`trinity-process`: the command-line client of the Trinity Process Engine.

The parser, the dispatch and the one-line error report (``trinity_cli.main`` is the
thin entry point that imports this).

Exit codes: 0 ok · 1 refused by a service (or an invalid definition) · 2 usage or
an unreadable local file · 3 a service or NATS unreachable · 4 the execution
failed · 5 the execution was cancelled · 6 still running when --timeout passed ·
70 a bug in the CLI · 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from typing import NoReturn, TextIO

from trinity_cli.client import SERVICES, Clients, default_nats_url, default_target, target_env
from trinity_cli.commands import approvals, definitions, executions, facts, work
from trinity_cli.context import Command, Context
from trinity_cli.errors import CliError, ExitCode
from trinity_cli.render import print_json
from trinity_platform.tls import TlsConfigError

PROG = "trinity-process"
EPILOG = """\
exit codes:
  0    ok
  1    refused by a service (status, reason and field violations are printed),
       or the definition is invalid
  2    usage error, or a local file that cannot be read or parsed
  3    a service or NATS is unreachable
  4    the execution failed (--wait, --watch, executions watch)
  5    the execution was cancelled (--wait, --watch, executions watch)
  6    still running when --timeout passed
  70   a bug in the CLI (TRINITY_DEBUG=1 shows the traceback)
  130  interrupted (Ctrl-C)

environment:
  TRINITY_<SERVICE>_TARGET  address of a service (default 127.0.0.1:7401..7404)
  TRINITY_NATS_URL          NATS for `facts tail` (default nats://127.0.0.1:4222)
  TRINITY_TOKEN             bearer token: who you are (sent with every call)
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(int(ExitCode.USAGE), f"{self.prog}: {message} (see {self.prog} --help)\n")


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (``-o json`` anywhere)."""
    parent = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parent.add_argument_group("common options")
    group.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default=default("text"),
        help="text for people (default), json for scripts",
    )
    group.add_argument(
        "--token",
        default=default(os.environ.get("TRINITY_TOKEN", "")),
        help="bearer token identifying you (default: $TRINITY_TOKEN)",
    )
    group.add_argument(
        "--call-timeout",
        type=float,
        metavar="SECONDS",
        default=default(10.0),
        help="deadline of each call (default 10)",
    )
    for service in SERVICES:
        group.add_argument(
            f"--{service}-target",
            metavar="HOST:PORT",
            default=default(None),
            help=f"{service} service (default: ${target_env(service)} or {default_target(service, {})})",
        )
    group.add_argument(
        "--nats-url",
        default=default(None),
        help="NATS server for facts (default: $TRINITY_NATS_URL or nats://127.0.0.1:4222)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Define, run and watch processes of AI agents and people.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    common = _common_options(defaults=False)
    for module in (definitions, executions, approvals, work, facts):
        module.register(commands, common)
    return parser


def _version() -> str:
    try:
        return metadata.version("trinity-process")
    except metadata.PackageNotFoundError:
        return "unknown"


def run(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors
        return int(stop.code or 0)
    targets = {
        service: getattr(args, f"{service}_target") or default_target(service)
        for service in SERVICES
    }
    try:
        clients = Clients(targets=targets, token=args.token, timeout=args.call_timeout)
    except TlsConfigError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return int(ExitCode.USAGE)
    ctx = Context(
        args=args,
        clients=clients,
        nats_url=args.nats_url or default_nats_url(),
        output=args.output,
    )
    command: Command = args.func
    try:
        return command(ctx)
    except CliError as error:
        report(error, ctx.json, sys.stderr)
        return int(error.code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:  # `trinity-process … | head`
        sys.stderr.close()
        return int(ExitCode.OK)
    except Exception as error:
        if os.environ.get("TRINITY_DEBUG"):
            traceback.print_exc()
        report(
            CliError(
                f"internal error: {type(error).__name__}: {error} "
                "(a bug in the CLI; TRINITY_DEBUG=1 shows the traceback)",
                ExitCode.INTERNAL,
            ),
            ctx.json,
            sys.stderr,
        )
        return int(ExitCode.INTERNAL)
    finally:
        clients.close()


def report(error: CliError, as_json: bool, err: TextIO) -> None:
    """The one line of a failure: text, or a JSON object with status, reason and violations."""
    if as_json:
        print_json(error.as_dict(), err, lines=True)
    else:
        print(f"{PROG}: {error.message}", file=err, flush=True)
