"""Issue 10, point 3: deploy/local_replicas.py runs the examples to completion with two
replicas of every service against PostgreSQL and one NATS (under the broker
permissions of deploy/k8s/base/nats). Issue 19 §3: clients reach every replica, so when the
first replica of every service is killed, the calls go to the second at once, without
a restart. Its checker is tested on made-up facts too, so a broken run cannot pass
unseen."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest
from deploy_support import load_script

from trinity.process.work.v1 import facts_pb2 as work_facts
from trinity_platform.envelope import Envelope
from trinity_platform.subjects import facts_stream

POSTGRES_ENV = "TRINITY_TEST_POSTGRES_URL"


@pytest.fixture(scope="module")
def replicas() -> ModuleType:
    return load_script("local_replicas.py")


def envelope(message_id: str, fact: str, subject: str, data: bytes = b"") -> Envelope:
    service = fact.split(".")[2]
    return Envelope(
        id=message_id,
        source=f"trinity.process/{service}",
        type=fact,
        subject=subject,
        time=datetime.now(UTC),
        data=data,
    )


def test_the_checker_sees_what_goes_wrong(replicas: ModuleType, tmp_path: Path) -> None:
    outcome = replicas.Outcome(
        example="weekly-report",
        phase=2,
        execution_id="e1",
        status="EXECUTION_STATUS_COMPLETED",
        steps={"gather": "STEP_STATUS_COMPLETED", "write": "STEP_STATUS_COMPLETED"},
        decisions=0,
        seconds=1.0,
        executors=["someone-else"],
    )
    failed = work_facts.WorkFailed(work_id="w2")
    failed.error.code = "AGENT_UNAVAILABLE"
    failed.correlation.execution_id = "e1"
    streams = {facts_stream(s): [] for s in ("definition", "execution", "approval", "work")}
    done = "trinity.process.execution.v1.ProcessCompleted"
    streams[facts_stream("execution")] = [
        envelope("m1", done, "e1"),
        envelope("m1", done, "e1"),  # stored twice
    ]
    streams[facts_stream("work")] = [
        envelope("m2", "trinity.process.work.v1.WorkRequested", "w1"),
        envelope("m3", "trinity.process.work.v1.WorkRequested", "w2"),
        envelope("m4", "trinity.process.work.v1.WorkFailed", "w2", failed.SerializeToString()),
    ]
    (tmp_path / "weekly-report.jsonl").write_text("one line\n")
    problems = replicas.check(
        [outcome],
        streams,
        [tmp_path],
        {"execution": 0, "work-1": -9, "executor-0": 0},
        {"execution", "executor-0"},
    )
    text = "\n".join(problems)
    assert "step deliver is None" in text
    assert "phase-2 work ran on ['someone-else']" in text
    assert "message m1 stored 2 times" in text
    assert "e1: 2 ProcessCompleted facts" in text
    assert "work w1: 0 end facts" in text
    assert "work w2 failed: AGENT_UNAVAILABLE" in text
    assert "file notifications" in text
    assert "process work-1 exited with -9" in text
    assert "execution exited" not in text and "executor-0" not in text  # stopped on purpose


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_replicas_of_every_service_run_the_examples(
    replicas: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set; the multi-replica run needs PostgreSQL")
    report_path = tmp_path / "report.json"
    code = replicas.main(
        ["--postgres", admin_url, "--data-dir", str(tmp_path / "run"), "--json", str(report_path)]
    )
    report = json.loads(report_path.read_text())
    assert report["problems"] == [], report["problems"]
    assert code == 0
    progress = capsys.readouterr().err.splitlines()  # never silent for long
    assert any(line.endswith("service processes are SERVING") for line in progress), progress
    assert any("running each example once more" in line for line in progress), progress
    assert progress[-1].endswith("stopping every process and dropping the databases")
    assert report["processes"] == {
        "definition": 2,
        "execution": 2,
        "approval": 2,
        "work": 2,
        "executor": 2,
    }
    examples = set(replicas.SCENARIOS)
    assert examples <= {p.parent.name for p in replicas.EXAMPLES.glob("*/process.yaml")}
    outcomes = report["outcomes"]
    assert {o["example"] for o in outcomes} == examples
    assert len(outcomes) == 3 * len(examples)  # twice at once, then once after the failover
    assert all(o["status"] == "EXECUTION_STATUS_COMPLETED" for o in outcomes)
    assert all(o["executors"] == [replicas.SECOND_EXECUTOR_ID] for o in outcomes if o["phase"] == 2)
    # Killed, never restarted: every service answered through its second replica within
    # about a second (the bound leaves room for a loaded machine; the figure is printed).
    failover = report["failover"]["seconds"]
    assert set(failover) == {"definition", "execution", "approval", "work"}
    assert max(failover.values()) < 5.0, report["failover"]
    research = [o for o in outcomes if o["example"] == "research-review"]
    assert all(o["decisions"] == 2 for o in research)  # a revision round each

    async def leftover() -> list[str]:
        conn = await asyncpg.connect(admin_url)
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])",
                list(report["databases"].values()),
            )
        finally:
            await conn.close()
        return [row["datname"] for row in rows]

    assert asyncio.run(leftover()) == []  # the databases were dropped
