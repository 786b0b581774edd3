"""`executions migrate`: move running executions to another published version."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_cli.context import Context
from trinity_cli.errors import ExitCode, UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="move running executions to another version of their process (admin)",
        description="Move one execution (--execution), or every running or paused execution "
        "of a process version (--process and --from), to the published version --to. Steps "
        "map by equal ids; --map OLD=NEW says otherwise. An execution that cannot move is "
        "named with the reason and left as it is; --dry-run only reports.",
    )
    target = migrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--execution", metavar="ID", help="the execution to move")
    target.add_argument("--process", metavar="NAME", help="the executions of this process…")
    migrate.add_argument("--from", dest="from_version", metavar="VERSION", help="…at this version")
    migrate.add_argument("--to", required=True, metavar="VERSION", help="the version to move to")
    migrate.add_argument(
        "--map", action="append", default=[], metavar="OLD=NEW", help="step mapping; repeatable"
    )
    migrate.add_argument("--dry-run", action="store_true", help="report only, move nothing")
    migrate.add_argument(
        "--idempotency-key", metavar="KEY", help="sending again returns the first answer"
    )
    migrate.set_defaults(func=migrate_executions)


def migrate_executions(ctx: Context) -> int:
    args = ctx.args
    if args.process and not args.from_version:
        raise UsageError("--process needs --from (the version its executions run)")
    mapping = {}
    for entry in args.map:
        old, sep, new = entry.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UsageError(f"--map {entry!r}: expected OLD=NEW")
        mapping[old.strip()] = new.strip()
    request = api.MigrateExecutionRequest(
        request_id="" if args.dry_run else (args.idempotency_key or f"cli-{uuid.uuid4()}"),
        execution_id=args.execution or "",
        process_name=args.process or "",
        from_version=args.from_version or "",
        to_version=args.to,
        step_mapping=mapping,
        dry_run=args.dry_run,
    )
    reply = ctx.clients.call("execution", "MigrateExecution", request)
    refused = any(not o.can_migrate for o in reply.outcomes)
    if ctx.json:
        ctx.emit(reply)
    else:
        for o in reply.outcomes:
            if o.migrated:
                ctx.print(f"{o.execution_id}: moved to {reply.to_version}")
            elif o.can_migrate:
                ctx.print(f"{o.execution_id}: can move to {reply.to_version}")
            else:
                ctx.print(f"{o.execution_id}: cannot move")
                for p in o.problems:
                    ctx.print(f"  {p.code}{f' ({p.step_id})' if p.step_id else ''}: {p.message}")
        if not reply.outcomes:
            ctx.print("no running or paused execution matched")
        if reply.truncated:
            ctx.print("more executions matched: run the command again for the rest")
    return int(ExitCode.REFUSED if refused else ExitCode.OK)
