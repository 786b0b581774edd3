"""`work list`: what the executors were asked to do, and how it went."""

from __future__ import annotations

import argparse
from typing import Any

from trinity.process.common.v1 import enums_pb2
from trinity.process.work.v1 import work_pb2 as pb
from trinity.process.work.v1 import work_service_pb2 as api
from trinity_cli.context import Context, all_pages
from trinity_cli.errors import ExitCode
from trinity_cli.render import enum_name, money, one_line, table, timestamp, to_dict

STATUSES = {
    name.removeprefix("WORK_STATUS_").lower(): value
    for name, value in pb.WorkStatus.items()
    if value != pb.WORK_STATUS_UNSPECIFIED
}
KINDS = {
    name.removeprefix("WORK_KIND_").lower(): value
    for name, value in pb.WorkKind.items()
    if value != pb.WORK_KIND_UNSPECIFIED
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("work", help="work requests of agents, tools and notifications")
    sub = group.add_subparsers(dest="work_command", metavar="COMMAND")
    sub.required = True
    list_ = sub.add_parser("list", parents=[common], help="work requests, newest first")
    list_.add_argument("--execution", metavar="ID", help="only work of this execution")
    list_.add_argument("--status", choices=sorted(STATUSES), help="only this status")
    list_.add_argument("--kind", choices=sorted(KINDS), help="only this kind")
    list_.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    list_.set_defaults(func=list_work)


def _what(work: pb.WorkRequest) -> str:
    payload = work.payload
    case = payload.WhichOneof("kind")
    if case == "agent_task":
        return f"agent {payload.agent_task.agent}"
    if case == "tool_run":
        action = enums_pb2.ActionKind.Name(payload.tool_run.action)
        return "tool " + enum_name(action, "ACTION_KIND_")
    if case == "notification":
        channel = enums_pb2.Channel.Name(payload.notification.channel)
        return f"{enum_name(channel, 'CHANNEL_')} {payload.notification.target}"
    return "-"


def _outcome(work: pb.WorkRequest) -> str:
    if work.HasField("error") and work.error.code:
        return f"{work.error.code}: {one_line(work.error.message, 50)}"
    if work.HasField("result"):
        return one_line(work.result.output, 50) or "-"
    return "-"


def list_work(ctx: Context) -> int:
    args = ctx.args

    def fetch(token: str, size: int) -> Any:
        return ctx.clients.call(
            "work",
            "ListWork",
            api.ListWorkRequest(
                execution_id=args.execution or "",
                status=STATUSES.get(args.status or "", pb.WORK_STATUS_UNSPECIFIED),
                kind=KINDS.get(args.kind or "", pb.WORK_KIND_UNSPECIFIED),
                page_size=size,
                page_token=token,
            ),
        )

    found = list(all_pages(fetch, "work", args.limit))
    if ctx.json:
        ctx.emit({"work": [to_dict(w) for w in found]})
        return int(ExitCode.OK)
    if not found:
        ctx.note("no work requests")
        return int(ExitCode.OK)
    table(
        ["ID", "STATUS", "WHAT", "STEP", "COST", "CREATED", "OUTCOME"],
        [
            [
                w.id,
                enum_name(pb.WorkStatus.Name(w.status), "WORK_STATUS_"),
                _what(w),
                w.correlation.step_id or "-",
                money(w.result.cost) if w.result.HasField("cost") else "-",
                timestamp(w.create_time),
                _outcome(w),
            ]
            for w in found
        ],
        ctx.out,
    )
    return int(ExitCode.OK)
