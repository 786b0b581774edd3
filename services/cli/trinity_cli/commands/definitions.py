"""`definitions apply | validate | list | show | archive`."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

import yaml

from trinity.process.common.v1 import enums_pb2
from trinity.process.definition.v1 import definition_pb2 as pb
from trinity.process.definition.v1 import definition_service_pb2 as api
from trinity_cli.context import Context, all_pages
from trinity_cli.errors import CliError, ExitCode, UsageError
from trinity_cli.inputs import read_text
from trinity_cli.render import enum_name, money, one_line, table, timestamp, to_dict

STATUSES = {
    "draft": pb.DEFINITION_STATUS_DRAFT,
    "published": pb.DEFINITION_STATUS_PUBLISHED,
    "archived": pb.DEFINITION_STATUS_ARCHIVED,
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "definitions", aliases=["def"], help="process definitions: apply, validate, list, show"
    )
    sub = group.add_subparsers(dest="definitions_command", metavar="COMMAND")
    sub.required = True

    apply_ = sub.add_parser(
        "apply",
        parents=[common],
        help="create or update the draft of a process file",
        description="Create the draft of a process file, or update the draft of its name; "
        "with --publish, publish it as the next version. A file whose content equals the "
        "latest published version changes nothing.",
    )
    apply_.add_argument("file", help="process file (YAML or JSON)")
    apply_.add_argument("--publish", action="store_true", help="publish it as the next version")
    apply_.add_argument(
        "--major", action="store_true", help="with --publish: next major version (2.0, not 1.1)"
    )
    apply_.set_defaults(func=apply)

    validate = sub.add_parser(
        "validate",
        parents=[common],
        help="check a process file; every problem with its path",
        description="Validate a process file with the definition service (nothing is stored).",
    )
    validate.add_argument("file", help="process file (YAML or JSON)")
    validate.set_defaults(func=validate_file)

    list_ = sub.add_parser("list", parents=[common], help="list definitions, newest first")
    list_.add_argument("--status", choices=sorted(STATUSES), help="only this status")
    list_.add_argument("--name", help="only versions of this process")
    list_.add_argument("--limit", type=int, default=100, help="at most this many (0: all)")
    list_.set_defaults(func=list_definitions)

    show = sub.add_parser("show", parents=[common], help="show one version of a process")
    show.add_argument("name")
    show.add_argument("--version", help="MAJOR.MINOR (default: the latest published)")
    show.add_argument(
        "--source", action="store_true", help="print it as a process file (the authoring format)"
    )
    show.set_defaults(func=show_definition)

    archive = sub.add_parser(
        "archive", parents=[common], help="hide a version from new runs (running ones keep it)"
    )
    archive.add_argument("name")
    archive.add_argument("--version", required=True, help="MAJOR.MINOR")
    archive.set_defaults(func=archive_definition)


# ------------------------------------------------------------------------- apply


def _local_spec(text: str) -> tuple[str, pb.ProcessSpec | None]:
    """(name, spec) read locally, best effort: the service remains the judge of the file."""
    try:
        from trinity_process_model.authoring import parse_process
        from trinity_process_model.proto_codec import spec_to_proto

        spec = parse_process(text)
        return spec.name, spec_to_proto(spec)
    except Exception:  # not parsable here, or the codec is not installed: ask the service
        pass
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return "", None
    name = data.get("name") if isinstance(data, dict) else None
    return (name if isinstance(name, str) else ""), None


def _latest_published(ctx: Context, name: str) -> pb.ProcessDefinition | None:
    try:
        reply = ctx.clients.call(
            "definition",
            "GetDefinition",
            api.GetDefinitionRequest(by_name=api.NameSelector(name=name)),
        )
    except CliError as error:
        if error.status == "NOT_FOUND":
            return None
        raise
    definition: pb.ProcessDefinition = reply.definition
    return definition


def _draft_of(ctx: Context, name: str) -> pb.ProcessDefinition | None:
    reply = ctx.clients.call(
        "definition",
        "ListDefinitions",
        api.ListDefinitionsRequest(status=pb.DEFINITION_STATUS_DRAFT, name=name, page_size=1),
    )
    return reply.definitions[0] if reply.definitions else None


def apply_file(
    ctx: Context, path: str, publish: bool, major: bool = False
) -> tuple[str, pb.ProcessDefinition]:
    """Apply one process file; returns (what happened, the definition).

    What happened: ``created``, ``updated``, ``published`` or ``unchanged``.
    """
    text = read_text(path)
    name, local = _local_spec(text)
    if publish and local is not None:
        latest = _latest_published(ctx, name)
        if latest is not None and latest.spec == local:
            return "unchanged", latest
    draft = _draft_of(ctx, name) if name else None
    if draft is not None and local is not None and draft.spec == local:
        action, definition = "unchanged", draft  # the draft says this already
    elif draft is None:
        action = "created"
        definition = ctx.clients.call(
            "definition",
            "CreateDraft",
            api.CreateDraftRequest(
                request_id=_key(), yaml=text, created_by=ctx.clients.claimed_by()
            ),
        ).definition
    else:
        action = "updated"
        definition = ctx.clients.call(
            "definition",
            "UpdateDraft",
            api.UpdateDraftRequest(
                request_id=_key(),
                definition_id=draft.id,
                expected_revision=draft.revision,
                yaml=text,
            ),
        ).definition
    if publish:
        try:
            definition = ctx.clients.call(
                "definition",
                "PublishDefinition",
                api.PublishDefinitionRequest(
                    request_id=_key(),
                    definition_id=definition.id,
                    expected_revision=definition.revision,
                    bump=api.VERSION_BUMP_MAJOR if major else api.VERSION_BUMP_MINOR,
                ),
            ).definition
        except CliError as error:
            if error.reason != "DEFINITION_INVALID":
                raise
            raise _kept_as_draft(path, definition, error) from None
        action = "published"
    return action, definition


def _kept_as_draft(path: str, draft: pb.ProcessDefinition, error: CliError) -> CliError:
    """The draft stays; say so, with every problem that kept it from being published."""
    count = len(error.violations)
    problems = f"{count} problem{'s' if count != 1 else ''}"
    line = f"{path}: kept as draft {draft.name} rev {draft.revision} (not published: {problems})"
    if error.violations:
        line += " [" + "; ".join(f"{v.field}: {v.description}" for v in error.violations) + "]"
    return CliError(
        line, error.code, status=error.status, reason=error.reason, violations=error.violations
    )


def apply(ctx: Context) -> int:
    args = ctx.args
    if args.major and not args.publish:
        raise UsageError("--major only makes sense with --publish")
    action, definition = apply_file(ctx, args.file, args.publish, args.major)
    if ctx.json:
        ctx.emit({"action": action, "definition": to_dict(definition)})
    else:
        ctx.print(describe_apply(action, definition))
    return int(ExitCode.OK)


def describe_apply(action: str, definition: pb.ProcessDefinition) -> str:
    if action == "unchanged" and not definition.version:
        return f"draft {definition.name} rev {definition.revision} unchanged (id {definition.id})"
    if action == "unchanged":
        return f"{definition.name} {definition.version} is already published with this content"
    if action == "published":
        return f"published {definition.name} {definition.version} (id {definition.id})"
    return f"{action} draft {definition.name} (revision {definition.revision}, id {definition.id})"


def _key() -> str:
    return f"cli-{uuid.uuid4()}"


# ---------------------------------------------------------------------- validate


def validate_file(ctx: Context) -> int:
    text = read_text(ctx.args.file)
    try:
        reply = ctx.clients.call(
            "definition", "ValidateDefinition", api.ValidateDefinitionRequest(yaml=text)
        )
    except CliError as error:
        if error.reason != "DEFINITION_UNPARSABLE" or not error.violations:
            raise
        # A file that does not even parse: the same list as for an invalid one.
        reply = api.ValidateDefinitionResponse(
            valid=False,
            violations=[
                pb.Violation(field="" if v.field == "yaml" else v.field, description=v.description)
                for v in error.violations
            ],
        )
    if ctx.json:
        ctx.emit({"file": ctx.args.file, **to_dict(reply)})
    elif reply.valid:
        ctx.print(f"{ctx.args.file}: valid")
    else:
        count = len(reply.violations)
        ctx.print(f"{ctx.args.file}: {count} problem{'s' if count != 1 else ''}")
        for violation in reply.violations:
            ctx.print(f"  {violation.field or '(file)'}: {violation.description}")
    return int(ExitCode.OK if reply.valid else ExitCode.REFUSED)


# ---------------------------------------------------------------- list and show


def list_definitions(ctx: Context) -> int:
    args = ctx.args

    def fetch(token: str, size: int) -> Any:
        return ctx.clients.call(
            "definition",
            "ListDefinitions",
            api.ListDefinitionsRequest(
                status=STATUSES.get(args.status or "", pb.DEFINITION_STATUS_UNSPECIFIED),
                name=args.name or "",
                page_size=size,
                page_token=token,
            ),
        )

    found = list(all_pages(fetch, "definitions", args.limit))
    if ctx.json:
        ctx.emit({"definitions": [to_dict(d) for d in found]})
        return int(ExitCode.OK)
    if not found:
        ctx.note("no definitions yet: trinity-process definitions apply FILE --publish")
        return int(ExitCode.OK)
    rows = [
        [
            d.name,
            d.version or f"rev {d.revision}",
            enum_name(pb.DefinitionStatus.Name(d.status), "DEFINITION_STATUS_"),
            str(len(d.spec.steps)),
            timestamp(d.publish_time if d.version else d.update_time),
            d.id,
        ]
        for d in found
    ]
    table(["NAME", "VERSION", "STATUS", "STEPS", "CHANGED", "ID"], rows, ctx.out)
    return int(ExitCode.OK)


def get_by_name(ctx: Context, name: str, version: str | None) -> pb.ProcessDefinition:
    reply = ctx.clients.call(
        "definition",
        "GetDefinition",
        api.GetDefinitionRequest(by_name=api.NameSelector(name=name, version=version or "")),
    )
    definition: pb.ProcessDefinition = reply.definition
    return definition


def show_definition(ctx: Context) -> int:
    definition = get_by_name(ctx, ctx.args.name, ctx.args.version)
    if ctx.args.source:
        ctx.print(_source(definition.spec).rstrip("\n"))
    elif ctx.json:
        ctx.emit({"definition": to_dict(definition)})
    else:
        _print_definition(ctx, definition)
    return int(ExitCode.OK)


def _source(spec: pb.ProcessSpec) -> str:
    try:
        from trinity_process_model.authoring import dump_process
        from trinity_process_model.proto_codec import spec_from_proto
    except ImportError:
        raise CliError("--source needs trinity_process_model.proto_codec, not installed") from None
    text: str = dump_process(spec_from_proto(spec))
    return text


def _print_definition(ctx: Context, d: pb.ProcessDefinition) -> None:
    spec = d.spec
    status = enum_name(pb.DefinitionStatus.Name(d.status), "DEFINITION_STATUS_")
    when = {
        "published": d.publish_time,
        "archived": d.archive_time,
    }.get(status, d.update_time)
    rows = [
        ("name", spec.name or d.name),
        ("version", f"{d.version or '-'} ({status} {timestamp(when)})"),
        ("id", d.id),
    ]
    if spec.description:
        rows.append(("description", one_line(spec.description, 100)))
    if spec.HasField("budget"):
        action = enum_name(pb.BudgetAction.Name(spec.budget.on_exceeded), "BUDGET_ACTION_")
        rows.append(("budget", f"{money(spec.budget.limit)} (then {action})"))
    for declared in spec.inputs:
        rows.append(("input", _input(declared)))
    rows.append(("triggers", ", ".join(_trigger(t) for t in spec.triggers) or "manual"))
    for output in spec.outputs:
        rows.append(("output", f"{_channel(output.channel)} {output.target}"))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        ctx.print(f"{key.ljust(width)}  {value}")
    ctx.print()
    table(
        ["STEP", "KIND", "AFTER", "DETAIL"],
        [
            [s.id, s.WhichOneof("kind") or "-", ",".join(s.depends_on) or "-", _detail(s)]
            for s in spec.steps
        ],
        ctx.out,
    )


def _input(declared: pb.InputDeclaration) -> str:
    kind = enum_name(pb.InputType.Name(declared.type), "INPUT_TYPE_")
    facts = [kind]
    if declared.required:
        facts.append("required")
    if declared.HasField("default_value"):
        from trinity_process_model.proto_codec import value_from_proto  # slow import: lazy

        default = json.dumps(
            value_from_proto(declared.default_value), ensure_ascii=False, sort_keys=True
        )
        facts.append(f"default {one_line(default, 40)}")
    about = f" · {one_line(declared.description, 80)}" if declared.description else ""
    return f"{declared.name} ({', '.join(facts)}){about}"


def _trigger(trigger: pb.Trigger) -> str:
    kind = trigger.WhichOneof("kind")
    if kind == "schedule":
        zone = trigger.schedule.timezone or "UTC"
        return f'schedule "{trigger.schedule.cron}" {zone}'
    if kind == "event":
        return f"event {trigger.event.subject}"
    return "manual"


def _channel(value: enums_pb2.Channel.ValueType) -> str:
    return enum_name(enums_pb2.Channel.Name(value), "CHANNEL_")


def _detail(step: pb.Step) -> str:
    kind = step.WhichOneof("kind")
    if kind == "agent_task":
        return f"agent {step.agent_task.agent}"
    if kind == "human_approval":
        return "approvers " + ", ".join(step.human_approval.approvers)
    if kind == "gateway":
        routes = [
            f"{r.target}{' (default)' if r.is_default else ''}"
            + (f" max {r.max_iterations}" if r.max_iterations else "")
            for r in step.gateway.routes
        ]
        kind_name = enum_name(pb.GatewayType.Name(step.gateway.type), "GATEWAY_TYPE_")
        return f"{kind_name} → " + " | ".join(routes)
    if kind == "timer":
        if step.timer.WhichOneof("wait") == "duration":
            seconds = step.timer.duration.ToTimedelta().total_seconds()
            return f"wait {seconds:g}s"
        return f"until {step.timer.until} {step.timer.timezone or 'UTC'}"
    if kind == "notification":
        return f"{_channel(step.notification.channel)} {step.notification.target}"
    if kind == "tool_run":
        return enum_name(enums_pb2.ActionKind.Name(step.tool_run.action), "ACTION_KIND_")
    return "-"


# ----------------------------------------------------------------------- archive


def archive_definition(ctx: Context) -> int:
    definition = get_by_name(ctx, ctx.args.name, ctx.args.version)
    reply = ctx.clients.call(
        "definition",
        "ArchiveDefinition",
        api.ArchiveDefinitionRequest(request_id=_key(), definition_id=definition.id),
    )
    if ctx.json:
        ctx.emit(reply)
    else:
        ctx.print(f"archived {reply.definition.name} {reply.definition.version}")
    return int(ExitCode.OK)
