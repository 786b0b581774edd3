"""`run` and `executions status | list | cancel | pause | resume | retry | signal | watch`
(`migrate` lives in migrate.py)."""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from trinity.process.execution.v1 import execution_pb2 as pb
from trinity.process.execution.v1 import execution_service_pb2 as api
from trinity_cli.commands import migrate
from trinity_cli.compensation import compensation_rows, compensation_summary
from trinity_cli.context import Context, all_pages
from trinity_cli.errors import ExitCode, UsageError
from trinity_cli.inputs import parse_inputs
from trinity_cli.render import duration, money, one_line, table, timestamp, to_dict
from trinity_cli.watch import (
    FINISHED,
    cost,
    elapsed,
    kind_name,
    progress,
    status_name,
    step_status_name,
    watch,
)
from trinity_platform.json_values import struct_to_dict

STATUSES = {
    name.removeprefix("EXECUTION_STATUS_").lower(): value
    for name, value in pb.ExecutionStatus.items()
    if value != pb.EXECUTION_STATUS_UNSPECIFIED
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    run_ = commands.add_parser(
        "run",
        parents=[common],
        help="start an execution of a published process",
        description="Start an execution of the latest (or given) published version of a process.",
    )
    run_.add_argument("name", help="process name")
    run_.add_argument("--version", help="MAJOR.MINOR (default: the latest published)")
    run_.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="input value (text); KEY:=JSON for numbers, booleans, lists, objects; repeatable",
    )
    run_.add_argument("--input-file", metavar="FILE", help="input values from a YAML or JSON file")
    run_.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="run again with the same key returns the same execution instead of a new one",
    )
    follow = run_.add_mutually_exclusive_group()
    follow.add_argument(
        "--wait", action="store_true", help="wait until it finishes; exit 0 only if it completed"
    )
    follow.add_argument(
        "--watch", action="store_true", help="show the steps progressing live until it finishes"
    )
    _timeout_option(run_)
    run_.set_defaults(func=run)

    group = commands.add_parser(
        "executions", aliases=["exec"], help="executions: status, list, cancel, watch, …"
    )
    sub = group.add_subparsers(dest="executions_command", metavar="COMMAND")
    sub.required = True

    status = sub.add_parser("status", parents=[common], help="an execution and its steps")
    status.add_argument("id", help="execution id")
    status.set_defaults(func=show_status)

    list_ = sub.add_parser("list", parents=[common], help="executions, newest first")
    list_.add_argument("--process", metavar="NAME", help="only executions of this process")
    list_.add_argument("--status", choices=sorted(STATUSES), help="only this status")
    list_.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    list_.set_defaults(func=list_executions)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel an execution")
    cancel.add_argument("id", help="execution id")
    cancel.add_argument("--reason", required=True, help="why (kept with the execution)")
    cancel.add_argument(
        "--compensate",
        action="store_true",
        help="undo the completed steps first (their compensations, latest first)",
    )
    cancel.set_defaults(func=cancel_execution)

    pause = sub.add_parser("pause", parents=[common], help="start no new step until resumed")
    pause.add_argument("id", help="execution id")
    pause.add_argument("--reason", default="", help="why")
    pause.set_defaults(func=pause_execution)

    resume = sub.add_parser("resume", parents=[common], help="resume a paused execution")
    resume.add_argument("id", help="execution id")
    resume.set_defaults(func=resume_execution)

    retry = sub.add_parser(
        "retry", parents=[common], help="retry the failed steps of a failed execution"
    )
    retry.add_argument("id", help="execution id")
    retry.add_argument("--step", default="", help="retry only this failed step")
    retry.set_defaults(func=retry_execution)

    signal = sub.add_parser(
        "signal",
        parents=[common],
        help="send a message to the step that waits for it (wait_for_message)",
        description="Deliver a message to the wait_for_message step waiting for it: the one "
        "whose correlation key is --key, or the one of execution --execution. When no step "
        "waits yet, the message is kept (--ttl) and delivered when one does.",
    )
    signal.add_argument("message", help="the message name the step waits for")
    target = signal.add_mutually_exclusive_group(required=True)
    target.add_argument("--key", help="correlation key of the waiting step")
    target.add_argument("--execution", metavar="ID", help="the execution whose step waits")
    signal.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="payload field (text); KEY:=JSON for numbers, booleans, lists, objects; repeatable",
    )
    signal.add_argument(
        "--ttl",
        metavar="DURATION",
        help="keep it this long if no step waits yet (e.g. 10m; 0 refuses instead); "
        "default: the service's",
    )
    signal.add_argument(
        "--idempotency-key", metavar="KEY", help="the message id: sending again delivers once"
    )
    signal.set_defaults(func=signal_execution)
    migrate.register(sub, common)

    watch_ = sub.add_parser(
        "watch", parents=[common], help="follow an execution live until it finishes"
    )
    watch_.add_argument("id", help="execution id")
    _timeout_option(watch_)
    watch_.set_defaults(func=watch_execution)


def _timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --wait/--watch: give up after this long (exit 6); default: no limit",
    )


# --------------------------------------------------------------------------- run


def run(ctx: Context) -> int:
    args = ctx.args
    values = parse_inputs(args.input, args.input_file)
    request = api.TriggerProcessRequest(
        request_id=args.idempotency_key or f"cli-{uuid.uuid4()}",
        process_name=args.name,
        version=args.version or "",
        triggered_by=ctx.clients.claimed_by(),
    )
    json_format.ParseDict(values, request.input)
    execution: pb.Execution = ctx.clients.call("execution", "TriggerProcess", request).execution
    if not (args.wait or args.watch):
        if ctx.json:
            ctx.emit({"execution": to_dict(execution)})
        else:
            ctx.print(execution.id)
            ctx.note(
                f"started {execution.process_name} {execution.process_version}; "
                f"follow it: trinity-process executions watch {execution.id}"
            )
        return int(ExitCode.OK)
    code = watch(ctx, execution.id, report=args.watch, timeout=args.timeout)
    if args.wait and not ctx.json:
        _print_execution(ctx, _get(ctx, execution.id))
    return code


def watch_execution(ctx: Context) -> int:
    return watch(ctx, ctx.args.id, report=True, timeout=ctx.args.timeout)


# ------------------------------------------------------------------ status, list


def _get(ctx: Context, execution_id: str) -> pb.Execution:
    reply = ctx.clients.call(
        "execution", "GetExecution", api.GetExecutionRequest(execution_id=execution_id)
    )
    execution: pb.Execution = reply.execution
    return execution


def show_status(ctx: Context) -> int:
    execution = _get(ctx, ctx.args.id)
    if ctx.json:
        ctx.emit({"execution": to_dict(execution)})
    else:
        _print_execution(ctx, execution)
    return int(ExitCode.OK)


def _print_execution(ctx: Context, e: pb.Execution) -> None:
    trigger = pb.TriggerKind.Name(e.trigger_kind).removeprefix("TRIGGER_KIND_").lower()
    rows = [
        ("execution", e.id),
        ("process", f"{e.process_name} {e.process_version}"),
        ("status", f"{status_name(e)} ({progress(e)} steps)"),
        ("started", f"{timestamp(_started(e))} ({trigger} by {e.triggered_by or '-'})"),
    ]
    if e.status in FINISHED:
        rows.append(("ended", f"{timestamp(e.end_time)} (took {duration(elapsed(e))})"))
    rows.append(("cost", cost(e)))
    if e.current_step_ids:
        rows.append(("now", ", ".join(e.current_step_ids)))
    if e.HasField("error") and e.error.code:
        rows.append(("error", f"{e.error.code}: {one_line(e.error.message, 100)}"))
    if e.cancel_reason:
        rows.append(("cancelled", f"{e.cancel_reason} (by {e.cancelled_by or '-'})"))
    if e.HasField("compensation"):
        rows.append(("compensation", compensation_summary(e)))
    if e.parent_execution_id:
        rows.append(
            ("parent", f"{e.parent_execution_id} (step {e.parent_step_id}, depth {e.depth})")
        )
    if e.input.fields:
        rows.append(("input", one_line(json.dumps(struct_to_dict(e.input)), 100)))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        ctx.print(f"{key.ljust(width)}  {value}")
    if e.steps:
        ctx.print()
        step_rows: list[list[str]] = []
        for s in e.steps:
            # A looping step: its earlier iterations first (bounded: say how many are not kept).
            if s.iterations_omitted:
                step_rows.append(
                    [f"{s.step_id}#…", "", f"{s.iterations_omitted} earlier", "", "", "", ""]
                )
            step_rows.extend(_iteration_row(s, it) for it in s.iterations)
            step_rows.append(
                [
                    s.step_id,
                    kind_name(s),
                    step_status_name(s),
                    str(s.iteration or "-"),
                    money(s.cost) if s.HasField("cost") else "-",
                    duration(s.duration) if s.HasField("duration") else "-",
                    _result(s),
                ]
            )
        table(["STEP", "KIND", "STATUS", "ITER", "COST", "TOOK", "RESULT"], step_rows, ctx.out)
    if e.compensation.steps:
        ctx.print()
        table(["UNDO", "ITER", "STATUS", "ATTEMPT", "RESULT"], compensation_rows(e), ctx.out)


def _iteration_row(step: pb.StepExecution, it: pb.StepIteration) -> list[str]:
    status = pb.StepStatus.Name(it.status).removeprefix("STEP_STATUS_").lower()
    if it.HasField("error") and it.error.code:
        result = f"{it.error.code}: {one_line(it.error.message, 50)}"
    else:
        result = it.decision or it.skip_reason or (one_line(it.output, 50) if it.output else "-")
    return [
        f"{step.step_id}#{it.iteration}",
        kind_name(step),
        status,
        str(it.iteration),
        money(it.cost) if it.HasField("cost") else "-",
        duration(it.duration) if it.HasField("duration") else "-",
        result,
    ]


def _started(e: pb.Execution) -> Timestamp:
    return e.start_time if e.HasField("start_time") else e.create_time


def _result(step: pb.StepExecution) -> str:
    if step.HasField("awaited_message") and step.status == pb.STEP_STATUS_WAITING:
        awaited = step.awaited_message
        return f"awaits {awaited.message_name} (key {one_line(awaited.correlation_key, 30)})"
    if step.items_total and step.status == pb.STEP_STATUS_WAITING:
        failed = f", {step.items_failed} failed" if step.items_failed else ""
        return f"items {step.items_done}/{step.items_total} ended{failed}"
    if step.child_execution_id and step.status == pb.STEP_STATUS_WAITING:
        return f"awaits child {step.child_execution_id}"
    if step.HasField("error") and step.error.code:
        return f"{step.error.code}: {one_line(step.error.message, 50)}"
    if step.decision:
        return step.decision
    if step.skip_reason:
        return step.skip_reason
    return one_line(step.output, 50) if step.output else "-"


def list_executions(ctx: Context) -> int:
    args = ctx.args

    def fetch(token: str, size: int) -> Any:
        return ctx.clients.call(
            "execution",
            "ListExecutions",
            api.ListExecutionsRequest(
                process_name=args.process or "",
                status=STATUSES.get(args.status or "", pb.EXECUTION_STATUS_UNSPECIFIED),
                page_size=size,
                page_token=token,
            ),
        )

    found = list(all_pages(fetch, "executions", args.limit))
    if ctx.json:
        ctx.emit({"executions": [to_dict(e) for e in found]})
        return int(ExitCode.OK)
    if not found:
        ctx.note("no executions yet: trinity-process run NAME --watch")
        return int(ExitCode.OK)
    table(
        ["ID", "PROCESS", "VERSION", "STATUS", "STEPS", "COST", "STARTED"],
        [
            [
                e.id,
                e.process_name,
                e.process_version,
                status_name(e),
                progress(e),
                money(e.total_cost) if e.HasField("total_cost") else "-",
                timestamp(_started(e)),
            ]
            for e in found
        ],
        ctx.out,
    )
    return int(ExitCode.OK)


# ------------------------------------------------------------------- commands


def _changed(ctx: Context, verb: str, reply: Any) -> int:
    if ctx.json:
        ctx.emit(reply)
    else:
        e = reply.execution
        ctx.print(f"{verb} {e.id}: now {status_name(e)} ({progress(e)} steps)")
    return int(ExitCode.OK)


def _key() -> str:
    return f"cli-{uuid.uuid4()}"


def cancel_execution(ctx: Context) -> int:
    request = api.CancelExecutionRequest(
        request_id=_key(),
        execution_id=ctx.args.id,
        reason=ctx.args.reason,
        cancelled_by=ctx.clients.claimed_by(),
        compensate=ctx.args.compensate,
    )
    # With --compensate it is "now compensating" until the undo is done.
    return _changed(ctx, "cancelled", ctx.clients.call("execution", "CancelExecution", request))


def pause_execution(ctx: Context) -> int:
    request = api.PauseExecutionRequest(
        request_id=_key(), execution_id=ctx.args.id, reason=ctx.args.reason
    )
    return _changed(ctx, "paused", ctx.clients.call("execution", "PauseExecution", request))


def resume_execution(ctx: Context) -> int:
    request = api.ResumeExecutionRequest(request_id=_key(), execution_id=ctx.args.id)
    return _changed(ctx, "resumed", ctx.clients.call("execution", "ResumeExecution", request))


def signal_execution(ctx: Context) -> int:
    args = ctx.args
    request = api.SignalExecutionRequest(
        request_id=args.idempotency_key or _key(),
        message_name=args.message,
        correlation_key=args.key or "",
        execution_id=args.execution or "",
    )
    json_format.ParseDict(parse_inputs(args.field, None), request.payload)
    if args.ttl is not None:
        from trinity_process_model.durations import parse_duration  # slow import: lazy

        try:
            ttl = timedelta(0) if args.ttl.strip() == "0" else parse_duration(args.ttl)
            request.time_to_live.FromTimedelta(ttl)
        except ValueError as error:
            raise UsageError(f"--ttl: {error}") from None
    reply = ctx.clients.call("execution", "SignalExecution", request)
    if ctx.json:
        ctx.emit(reply)
    elif reply.delivered:
        ctx.print(f"delivered to step {reply.step_id} of execution {reply.execution_id}")
    else:
        ctx.print(f"kept until {timestamp(reply.expire_time)}: no step waits for it yet")
    return int(ExitCode.OK)


def retry_execution(ctx: Context) -> int:
    request = api.RetryExecutionRequest(
        request_id=_key(), execution_id=ctx.args.id, step_id=ctx.args.step
    )
    return _changed(ctx, "retrying", ctx.clients.call("execution", "RetryExecution", request))
