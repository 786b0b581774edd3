"""Each command against stand-in services over real gRPC: what it sends, prints and returns."""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path

from trinity.process.approval.v1 import approval_pb2
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity_cli import watch
from trinity_cli.client import Clients
from trinity_cli.context import Context
from trinity_cli.errors import CliError, ExitCode

PROCESS = "name: it3\ndescription: research and review\nsteps:\n  - id: research\n  - id: review\n"


def _file(tmp_path: Path, text: str = PROCESS, name: str = "it3.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------ definitions


def test_apply_creates_a_draft_then_updates_it_then_publishes(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _file(tmp_path)
    created = cli("definitions", "apply", path)
    assert created.code == 0, created.err
    assert created.out == "created draft it3 (revision 1, id def-1)\n"
    updated = cli("definitions", "apply", path)
    assert updated.out == "updated draft it3 (revision 2, id def-1)\n"
    published = cli("-o", "json", "definitions", "apply", path, "--publish")
    assert published.code == 0, published.err
    body = json.loads(published.out)
    assert body["action"] == "published"
    assert body["definition"]["version"] == "1.0"
    assert body["definition"]["status"] == "DEFINITION_STATUS_PUBLISHED"
    assert len(fake.definitions.items) == 1


def test_validate_reports_every_violation_and_exits_1(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = cli("definitions", "validate", _file(tmp_path))
    assert (good.code, good.out) == (0, f"{tmp_path / 'it3.yaml'}: valid\n")
    bad_path = _file(tmp_path, "name: bad-one\n", "bad.yaml")
    bad = cli("definitions", "validate", bad_path)
    assert bad.code == 1
    assert bad.out.splitlines() == [
        f"{bad_path}: 2 problems",
        "  steps[1].depends_on[0]: unknown step 'nowhere'",
        "  steps[2].gateway.routes: a gateway needs routes",
    ]
    as_json = cli("definitions", "validate", bad_path, "-o", "json")
    assert as_json.code == 1
    assert json.loads(as_json.out)["valid"] is False


def test_list_show_and_archive(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("definitions", "apply", _file(tmp_path), "--publish").code == 0
    listed = cli("definitions", "list")
    header, row = listed.out.splitlines()
    assert header.split() == ["NAME", "VERSION", "STATUS", "STEPS", "CHANGED", "ID"]
    assert row.split()[:4] == ["it3", "1.0", "published", "2"]
    shown = cli("definitions", "show", "it3")
    assert "description  research and review" in shown.out
    assert "research  agent_task" in shown.out
    archived = cli("definitions", "archive", "it3", "--version", "1.0")
    assert (archived.code, archived.out) == (0, "archived it3 1.0\n")
    again = cli("definitions", "archive", "it3", "--version", "1.0")
    assert again.code == 1
    assert "FAILED_PRECONDITION DEFINITION_NOT_PUBLISHED" in again.err


def test_list_follows_pages(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for number in range(5):
        assert cli("definitions", "apply", _file(tmp_path, f"name: p{number}\n")).code == 0
    result = cli("-o", "json", "definitions", "list", "--limit", "0")
    names = [d["name"] for d in json.loads(result.out)["definitions"]]
    assert names == ["p4", "p3", "p2", "p1", "p0"]
    limited = cli("-o", "json", "definitions", "list", "--limit", "2")
    assert len(json.loads(limited.out)["definitions"]) == 2


# ------------------------------------------------------------------- executions


def test_run_sends_inputs_and_prints_the_id(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inputs = _file(tmp_path, "topic: agents\nrounds: 1\n", "input.yaml")
    result = cli(
        "run", "it3", "--input-file", inputs, "--input", "rounds:=2", "--idempotency-key", "k-1"
    )
    assert result.code == 0, result.err
    assert result.out == "exe-1\n"
    assert "follow it: trinity-process executions watch exe-1" in result.err
    (request,) = fake.executions.triggers
    assert request.request_id == "k-1"
    assert dict(request.input) == {"topic": "agents", "rounds": 2.0}
    assert request.triggered_by.startswith("cli")


def test_run_wait_exits_0_when_completed_and_prints_the_steps(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "it3", "--wait")
    assert result.code == 0, result.err
    assert "status     completed (3/3 steps)" in result.out
    assert "cost       0.36 USD of 5.00 USD" in result.out
    assert "research  agent_task  completed  1     0.12 USD  2.0s  research done" in result.out


def test_run_wait_json_is_the_final_execution(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "it3", "--wait", "-o", "json")
    assert result.code == 0
    execution = json.loads(result.out)["execution"]
    assert execution["status"] == "EXECUTION_STATUS_COMPLETED"
    assert [s["output"] for s in execution["steps"]] == [
        "research done",
        "review done",
        "publish done",
    ]


def test_run_wait_exits_4_when_the_execution_fails(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "fails", "--wait")
    assert result.code == 4
    assert "status     failed" in result.out
    assert "error      AGENT_UNAVAILABLE: the agent did not answer" in result.out


def test_run_wait_exits_6_on_timeout(cli, fake) -> None:  # type: ignore[no-untyped-def]
    fake.executions.watch_implemented = False
    result = cli("run", "forever", "--wait", "--timeout", "0.3")
    assert result.code == 6
    assert result.err_lines == [
        "trinity-process: execution exe-1 is still running after 0.3s (3/3 steps); "
        "follow it with: trinity-process executions watch exe-1"
    ]


def test_watch_shows_each_fact_and_the_outcome(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "it3", "--watch")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "execution exe-1: it3 1.0"
    # Each line: steps finished / all steps, then the fact.
    assert lines[1:-1] == [
        "[0/3] research started",
        "[1/3] research completed · 0.12 USD · 2.0s · 'research done'",
        "[1/3] review started",
        "[2/3] review completed · 0.12 USD · 2.0s · 'review done'",
        "[2/3] publish started",
        "[3/3] publish completed · 0.12 USD · 2.0s · 'publish done'",
    ]
    assert lines[-1].startswith("completed in ")
    assert lines[-1].endswith("· 3/3 steps · cost 0.36 USD of 5.00 USD")


def test_watch_reports_a_failed_step_and_exits_4(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "fails", "--watch")
    assert result.code == 4
    assert "publish failed · AGENT_UNAVAILABLE: the agent did not answer" in result.out
    assert result.out.splitlines()[-1].endswith("· AGENT_UNAVAILABLE: the agent did not answer")


def test_watch_falls_back_to_polling_without_the_stream(cli, fake) -> None:  # type: ignore[no-untyped-def]
    fake.executions.watch_implemented = False
    result = cli("run", "it3", "--watch")
    assert result.code == 0, result.err
    assert "[3/3] publish completed" in result.out


def test_watch_without_the_stream_reports_each_undo_of_a_compensation(cli, fake) -> None:  # type: ignore[no-untyped-def]
    fake.executions.watch_implemented = False
    result = cli("run", "saga", "--watch")
    assert result.code == 4, result.err
    lines = result.out.splitlines()
    at = lines.index("[3/3] publish failed · AGENT_UNAVAILABLE: the agent did not answer")
    assert lines[at + 1 : -1] == [
        "[3/3] compensating (failure): undoing review, research",
        "[3/3] undoing review",
        "[3/3] review compensated · 'review undone'",
        "[3/3] undoing research",
        "[3/3] research compensated · 'research undone'",
    ]
    assert lines[-1].endswith("compensation failure: 2/2 undone")


def test_watch_json_without_the_stream_reports_undos(cli, fake) -> None:  # type: ignore[no-untyped-def]
    fake.executions.watch_implemented = False
    result = cli("run", "saga", "--watch", "-o", "json")
    assert result.code == 4
    events = [json.loads(line) for line in result.out.splitlines()]
    undos = [
        (e["undo"]["step_id"], e["undo"]["status"]) for e in events if e.get("event") == "undo"
    ]
    assert undos == [
        ("review", "STEP_COMPENSATION_STATUS_RUNNING"),
        ("review", "STEP_COMPENSATION_STATUS_COMPENSATED"),
        ("research", "STEP_COMPENSATION_STATUS_RUNNING"),
        ("research", "STEP_COMPENSATION_STATUS_COMPENSATED"),
    ]
    assert events[-1]["execution"]["status"] == "EXECUTION_STATUS_FAILED"


def test_watch_json_is_json_lines_ending_with_the_execution(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "fails", "--watch", "-o", "json")
    assert result.code == 4
    events = [json.loads(line) for line in result.out.splitlines()]
    assert [e["type"].rsplit(".", 1)[1] for e in events[:-1]] == [
        "StepStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "StepStarted",
        "StepFailed",
    ]
    assert events[5]["fact"]["error"]["code"] == "AGENT_UNAVAILABLE"
    assert events[-1]["execution"]["status"] == "EXECUTION_STATUS_FAILED"


def test_watch_json_without_the_stream_reports_step_changes(cli, fake) -> None:  # type: ignore[no-untyped-def]
    fake.executions.watch_implemented = False
    result = cli("run", "it3", "--watch", "-o", "json")
    assert result.code == 0
    events = [json.loads(line) for line in result.out.splitlines()]
    assert {e.get("event") for e in events[:-1]} == {"step"}
    assert events[-1]["execution"]["status"] == "EXECUTION_STATUS_COMPLETED"


def test_watch_points_at_the_pending_approval(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("run", "gated", "--watch", "--timeout", "1")
    assert result.code == 6
    assert "] review waiting for a decision" in result.out
    assert (
        "      waiting for a decision by alice@example.com: trinity-process approvals approve "
        "apr-1 --token <their token> (or reject / request-changes)"
    ) in result.out


def test_watch_points_at_the_pending_approval_without_the_stream(cli, fake) -> None:  # type: ignore[no-untyped-def]
    fake.executions.watch_implemented = False
    result = cli("run", "gated", "--watch", "--timeout", "0.5")
    assert result.code == 6
    assert "[1/3] review waiting" in result.out
    assert (
        "approvals approve apr-1 --token <their token> (or reject / request-changes)" in result.out
    )


def test_status_list_cancel_pause_resume_retry(cli, fake) -> None:  # type: ignore[no-untyped-def]
    assert cli("run", "forever").code == 0
    status = cli("executions", "status", "exe-1")
    assert "process    forever 1.0" in status.out
    listed = cli("executions", "list", "--process", "forever")
    assert listed.out.splitlines()[1].split()[:4] == ["exe-1", "forever", "1.0", "running"]
    assert cli("executions", "pause", "exe-1").out.startswith("paused exe-1: now paused")
    assert cli("executions", "resume", "exe-1").out.startswith("resumed exe-1: now running")
    assert cli("executions", "retry", "exe-1").code == 0
    cancelled = cli("-o", "json", "executions", "cancel", "exe-1", "--reason", "wrong input")
    body = json.loads(cancelled.out)["execution"]
    assert (body["status"], body["cancel_reason"]) == ("EXECUTION_STATUS_CANCELLED", "wrong input")
    watched = cli("executions", "watch", "exe-1")
    assert watched.code == 5
    assert "cancelled: wrong input" in watched.out
    again = cli("executions", "cancel", "exe-1", "--reason", "twice")
    assert again.code == 1
    assert "FAILED_PRECONDITION EXECUTION_FINISHED" in again.err


# -------------------------------------------------------------------- approvals


def test_approvals_list_show_and_approve_as_the_token_holder(cli, fake) -> None:  # type: ignore[no-untyped-def]
    listed = cli("approvals", "list", "--approver", "alice@example.com")
    _header, row = listed.out.splitlines()
    assert row.split()[:5] == ["apr-1", "pending", "exe-1", "review", "alice@example.com"]
    assert cli("approvals", "list", "--approver", "carol@example.com").out == ""
    shown = cli("approvals", "show", "apr-1")
    assert "--- research" in shown.out and "findings" in shown.out
    approved = cli("approvals", "approve", "apr-1", "--comment", "fine", "--token", "tok-alice")
    assert approved.code == 0, approved.err
    assert approved.out == "approved apr-1 (review of execution exe-1) as alice@example.com\n"
    decided = fake.approvals.approvals["apr-1"]
    assert (decided.status, decided.comment) == (approval_pb2.APPROVAL_STATUS_APPROVED, "fine")
    again = cli("approvals", "reject", "apr-1", "--token", "tok-alice")
    assert again.code == 1
    assert "FAILED_PRECONDITION APPROVAL_ALREADY_DECIDED" in again.err


def test_request_changes_takes_the_token_from_the_environment(cli, fake, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRINITY_TOKEN", "tok-alice")
    result = cli("-o", "json", "approvals", "request-changes", "apr-1")
    assert result.code == 0, result.err
    approval = json.loads(result.out)["approval"]
    assert approval["status"] == "APPROVAL_STATUS_NEEDS_CHANGES"
    assert approval["decided_by"] == "alice@example.com"


# ------------------------------------------------------------------------- work


def test_work_list(cli, fake) -> None:  # type: ignore[no-untyped-def]
    result = cli("work", "list", "--execution", "exe-1")
    lines = result.out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "WHAT", "STEP", "COST", "CREATED", "OUTCOME"]
    assert (
        "agent researcher" in lines[1] and "0.25 USD" in lines[1] and "three findings" in lines[1]
    )
    assert "TIMEOUT: took too long" in lines[2]
    as_json = json.loads(cli("-o", "json", "work", "list").out)
    assert [w["id"] for w in as_json["work"]] == ["wrk-1", "wrk-2"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_line_is_redrawn_in_place(fake) -> None:  # type: ignore[no-untyped-def]
    clients = Clients(targets={s: fake.target for s in ("execution", "approval")})
    ctx = Context(args=argparse.Namespace(), clients=clients, nats_url="", out=_Terminal())
    fake.executions.TriggerProcess(
        execution_service_pb2.TriggerProcessRequest(process_name="it3"), None
    )
    try:
        assert watch.watch(ctx, "exe-1", report=True, timeout=30) == 0
    finally:
        clients.close()
    text = ctx.out.getvalue()
    assert "\r\x1b[2Krunning [" in text  # the status line: status, steps, now, cost, time
    assert "· now: " in text and "· cost " in text and " of 5.00 USD" in text
    assert text.splitlines()[-1].startswith("completed in ")  # the status line is gone


def test_on_a_terminal_the_status_line_keeps_its_clock_moving_while_nothing_happens(
    fake, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(watch, "REDRAW_INTERVAL", 0.01)
    fake.executions.hold = threading.Event()
    clients = Clients(targets={s: fake.target for s in ("execution", "approval")})
    ctx = Context(args=argparse.Namespace(), clients=clients, nats_url="", out=_Terminal())
    fake.executions.TriggerProcess(
        execution_service_pb2.TriggerProcessRequest(process_name="gated"), None
    )
    ended: list[int] = []

    def follow() -> None:
        try:
            ended.append(watch.watch(ctx, "exe-1", report=True, timeout=120))
        except CliError as error:
            ended.append(int(error.code))

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        deadline = time.monotonic() + 60
        while True:  # the stream is silent now: only the status line may change
            since_last_line = ctx.out.getvalue().rsplit("\n", 1)[-1]
            if since_last_line.count("\r\x1b[2Krunning [") >= 5:
                break
            assert time.monotonic() < deadline, ctx.out.getvalue()
            time.sleep(0.01)
    finally:
        fake.executions.hold.set()
        follower.join(60)
        clients.close()
    assert ended == [int(ExitCode.TIMED_OUT)]
    assert not ctx.out.getvalue().endswith("running")  # no status line left behind


def test_show_source_prints_the_process_file(cli, fake, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("definitions", "apply", _file(tmp_path), "--publish").code == 0
    result = cli("definitions", "show", "it3", "--source")
    assert result.code == 0, result.err
    assert result.out.startswith("name: it3\n")
    assert "agent_task:" in result.out and "agent: echo" in result.out


def test_status_shows_the_parent_and_the_child_a_step_awaits(cli, fake) -> None:  # type: ignore[no-untyped-def]
    assert cli("run", "forever").code == 0
    execution = fake.executions.runs["exe-1"].execution
    execution.status = execution_pb2.EXECUTION_STATUS_PAUSED  # the fake leaves it as it is
    execution.parent_execution_id, execution.parent_step_id, execution.depth = "exe-0", "plan", 1
    del execution.steps[:]
    execution.steps.add(
        step_id="review",
        kind=execution_pb2.STEP_KIND_SUB_PROCESS,
        status=execution_pb2.STEP_STATUS_WAITING,
        child_execution_id="exe-2",
    )
    execution.steps.add(
        step_id="files",
        kind=execution_pb2.STEP_KIND_SUB_PROCESS,
        status=execution_pb2.STEP_STATUS_WAITING,
        items_total=10,
        items_done=4,
        items_failed=1,
    )
    shown = cli("executions", "status", "exe-1").out
    assert "parent     exe-0 (step plan, depth 1)" in shown
    assert "awaits child exe-2" in shown
    assert "items 4/10 ended, 1 failed" in shown
