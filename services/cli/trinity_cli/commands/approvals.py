"""`approvals list | show | approve | reject | request-changes`.

The decider is whoever the bearer token (``--token`` or ``TRINITY_TOKEN``) says
you are; the approval service checks that you are one of the approvers.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from trinity.process.approval.v1 import approval_pb2 as pb
from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity_cli.context import Context, all_pages
from trinity_cli.errors import ExitCode
from trinity_cli.render import enum_name, one_line, table, timestamp, to_dict

DECISIONS = {
    "approve": (pb.DECISION_APPROVE, "approved"),
    "reject": (pb.DECISION_REJECT, "rejected"),
    "request-changes": (pb.DECISION_REQUEST_CHANGES, "asked for changes on"),
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("approvals", help="human decisions: list, approve, reject, …")
    sub = group.add_subparsers(dest="approvals_command", metavar="COMMAND")
    sub.required = True

    list_ = sub.add_parser(
        "list",
        parents=[common],
        help="pending approvals (oldest deadline first), or all approvals of an execution",
    )
    list_.add_argument("--approver", default="", help="only those this approver may decide")
    list_.add_argument("--execution", metavar="ID", help="every approval of this execution")
    list_.add_argument("--limit", type=int, default=100, help="at most this many (0: all)")
    list_.set_defaults(func=list_approvals)

    show = sub.add_parser("show", parents=[common], help="an approval and what to review")
    show.add_argument("id", help="approval id")
    show.set_defaults(func=show_approval)

    for verb in DECISIONS:
        decide_ = sub.add_parser(
            verb, parents=[common], help=f"decide as yourself (--token): {verb.replace('-', ' ')}"
        )
        decide_.add_argument("id", help="approval id")
        decide_.add_argument("--comment", default="", help="kept with the decision")
        decide_.set_defaults(func=decide, decision=verb)


def status_name(approval: pb.Approval) -> str:
    return enum_name(pb.ApprovalStatus.Name(approval.status), "APPROVAL_STATUS_")


def list_approvals(ctx: Context) -> int:
    args = ctx.args

    def fetch(token: str, size: int) -> Any:
        if args.execution:
            return ctx.clients.call(
                "approval",
                "ListApprovals",
                api.ListApprovalsRequest(
                    execution_id=args.execution, page_size=size, page_token=token
                ),
            )
        return ctx.clients.call(
            "approval",
            "ListPendingApprovals",
            api.ListPendingApprovalsRequest(
                approver=args.approver, page_size=size, page_token=token
            ),
        )

    found = list(all_pages(fetch, "approvals", args.limit))
    if ctx.json:
        ctx.emit({"approvals": [to_dict(a) for a in found]})
        return int(ExitCode.OK)
    if not found:
        ctx.note("no pending approvals" if not args.execution else "no approvals")
        return int(ExitCode.OK)
    table(
        ["ID", "STATUS", "EXECUTION", "STEP", "APPROVERS", "DEADLINE", "TITLE"],
        [
            [
                a.id,
                status_name(a),
                a.execution_id,
                a.step_id + (f"#{a.iteration}" if a.iteration > 1 else ""),
                ",".join(a.approvers),
                timestamp(a.deadline),
                one_line(a.title, 50) or "-",
            ]
            for a in found
        ],
        ctx.out,
    )
    return int(ExitCode.OK)


def show_approval(ctx: Context) -> int:
    reply = ctx.clients.call(
        "approval", "GetApproval", api.GetApprovalRequest(approval_id=ctx.args.id)
    )
    if ctx.json:
        ctx.emit(reply)
        return int(ExitCode.OK)
    a = reply.approval
    rows = [
        ("approval", a.id),
        ("title", a.title or "-"),
        ("status", status_name(a)),
        ("execution", f"{a.execution_id} step {a.step_id} (iteration {a.iteration or 1})"),
        ("approvers", ", ".join(a.approvers)),
        ("deadline", timestamp(a.deadline)),
    ]
    if a.decided_by:
        rows.append(("decided", f"by {a.decided_by} at {timestamp(a.decide_time)}"))
    if a.comment:
        rows.append(("comment", a.comment))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        ctx.print(f"{key.ljust(width)}  {value}")
    for artifact in a.artifacts:
        ctx.print(f"\n--- {artifact.name or 'artifact'} {artifact.reference}".rstrip())
        if artifact.text:
            ctx.print(artifact.text.rstrip())
    return int(ExitCode.OK)


def decide(ctx: Context) -> int:
    decision, past = DECISIONS[ctx.args.decision]
    reply = ctx.clients.call(
        "approval",
        "SubmitDecision",
        api.SubmitDecisionRequest(
            request_id=f"cli-{uuid.uuid4()}",
            approval_id=ctx.args.id,
            decision=decision,
            comment=ctx.args.comment,
        ),
    )
    if ctx.json:
        ctx.emit(reply)
    else:
        a = reply.approval
        ctx.print(f"{past} {a.id} ({a.step_id} of execution {a.execution_id}) as {a.decided_by}")
    return int(ExitCode.OK)
