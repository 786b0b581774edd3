"""`facts tail` against a private JetStream server: decoded by ce-type, filtered, stopped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from trinity.process.approval.v1 import facts_pb2 as approval_facts
from trinity.process.execution.v1 import execution_pb2, facts_pb2
from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_platform.envelope import build_headers
from trinity_platform.streams import ensure_streams
from trinity_platform.subjects import event_source, fact_subject


def _step_completed(execution_id: str, step_id: str) -> facts_pb2.StepCompleted:
    fact = facts_pb2.StepCompleted(
        execution=execution_pb2.ExecutionRef(execution_id=execution_id, process_name="it3"),
        step_id=step_id,
        iteration=1,
        output=f"{step_id} done",
    )
    fact.cost.currency_code = "USD"
    fact.cost.nanos = 250_000_000
    return fact


async def _publish(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    now = datetime.now(UTC)
    for number, (execution_id, step_id) in enumerate(
        [("exe-1", "research"), ("exe-2", "other"), ("exe-1", "review")]
    ):
        fact = _step_completed(execution_id, step_id)
        headers = build_headers(
            f"msg-{number}",
            "trinity.process.execution.v1.StepCompleted",
            event_source("execution"),
            execution_id,
            now,
            correlation_id=execution_id,
        )
        await js.publish(
            fact_subject("execution", "StepCompleted"), fact.SerializeToString(), headers=headers
        )
    started = work_facts.WorkStarted(work_id="wrk-1", executor_id="executor-0")
    started.correlation.execution_id = "exe-1"
    headers = build_headers(
        "msg-work", "trinity.process.work.v1.WorkStarted", event_source("work"), "wrk-1", now
    )
    await js.publish(
        fact_subject("work", "WorkStarted"), started.SerializeToString(), headers=headers
    )
    await nc.close()


@pytest.fixture
def facts(nats_url: str) -> str:
    asyncio.run(_publish(nats_url))
    return nats_url


def test_tail_decodes_facts_by_ce_type_as_json_lines(cli, facts: str) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "facts", "tail", "--nats-url", facts, "--service", "execution", "--count", "3", "-o", "json"
    )
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [line["fact"]["step_id"] for line in lines] == ["research", "other", "review"]
    first = lines[0]
    assert first["type"] == "trinity.process.execution.v1.StepCompleted"
    assert first["source"] == "trinity.process/execution"
    assert first["subject"] == first["correlation_id"] == "exe-1"
    assert first["fact"]["cost"] == {"currency_code": "USD", "nanos": 250000000}


def test_tail_filters_one_execution_across_services(cli, facts: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("facts", "tail", "--nats-url", facts, "--execution", "exe-1", "--idle", "1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 3, result.out
    by_kind = sorted(line.split()[2] for line in lines)
    assert by_kind == ["StepCompleted", "StepCompleted", "WorkStarted"]
    research = next(line for line in lines if "research" in line)
    assert "execution   StepCompleted" in research
    assert "cost=0.25 USD" in research and "output=research done" in research


def test_tail_without_streams_is_one_line(cli, nats_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("facts", "tail", "--nats-url", nats_url, "--idle", "1")
    assert result.code == 1
    assert result.err_lines == [
        f"trinity-process: no facts stream on NATS at {nats_url} yet (have the services started?)"
    ]


def test_a_message_that_is_not_a_fact_is_skipped_in_one_line(cli, facts: str) -> None:  # type: ignore[no-untyped-def]
    async def publish_garbage() -> None:
        nc = await nats.connect(facts)
        await nc.jetstream().publish(fact_subject("execution", "Bogus"), b"not protobuf")
        await nc.close()

    asyncio.run(publish_garbage())
    result = cli("facts", "tail", "--nats-url", facts, "--service", "execution", "--idle", "1")
    assert result.code == 0
    assert len(result.out.splitlines()) == 3
    assert result.err_lines == [
        "trinity-process: skipped a message: not a CloudEvent: missing header(s) "
        "ce-id, ce-source, ce-type, ce-specversion"
    ]


def test_the_example_subscriber_decodes_facts(facts: str) -> None:
    script = Path(__file__).resolve().parents[3] / "examples" / "subscriber.py"
    env = dict(os.environ, TRINITY_NATS_URL=facts)
    with subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            first = [process.stdout.readline() for _ in range(4)]
        finally:
            process.kill()
    assert first[1].strip() == "trinity.process.execution.v1.StepCompleted"
    assert first[2].strip() == "exe-1"
    assert first[3].strip().startswith("execution {")


def test_count_stops_at_that_many_facts(cli, facts: str) -> None:  # type: ignore[no-untyped-def]
    # Four facts wait in two streams; the consumers deliver them all at once.
    result = cli("facts", "tail", "--nats-url", facts, "--count", "1")
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 1, result.out


def test_timestamps_inside_a_fact_are_rfc_3339(cli, nats_url: str) -> None:  # type: ignore[no-untyped-def]
    async def publish() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_streams(js)
        fact = approval_facts.ApprovalRequested(approval_id="apr-1", execution_id="exe-1")
        fact.deadline.FromDatetime(datetime(2026, 11, 23, 5, 57, 32, 250000, tzinfo=UTC))
        headers = build_headers(
            "msg-approval",
            "trinity.process.approval.v1.ApprovalRequested",
            event_source("approval"),
            "apr-1",
            datetime.now(UTC),
        )
        await js.publish(
            fact_subject("approval", "ApprovalRequested"),
            fact.SerializeToString(),
            headers=headers,
        )
        await nc.close()

    asyncio.run(publish())
    result = cli("facts", "tail", "--nats-url", nats_url, "--service", "approval", "--count", "1")
    assert result.code == 0, result.err
    assert "deadline=2026-11-23T05:57:32.250000Z" in result.out, result.out
    assert "seconds=" not in result.out
