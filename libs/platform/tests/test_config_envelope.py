"""Settings, subjects and the CloudEvents envelope (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from google.protobuf.wrappers_pb2 import StringValue
from hypothesis import given
from hypothesis import strategies as st

from trinity_platform.authz import Identity
from trinity_platform.config import (
    DEFAULT_PORTS,
    load_settings,
    security_settings_table,
    service_target,
    settings_markdown,
    settings_table,
)
from trinity_platform.envelope import (
    Envelope,
    EnvelopeError,
    build_headers,
    decode,
    format_time,
    parse_time,
)
from trinity_platform.errors import InvalidArgument, NotFound, TrinityError
from trinity_platform.subjects import (
    WORK_QUEUE_STREAM,
    event_source,
    fact_subject,
    facts_stream,
    stream_for_subject,
    work_queue_subject,
)


def test_defaults() -> None:
    s = load_settings("execution", DEFAULT_PORTS["execution"], env={})
    assert s.nats_url == "nats://127.0.0.1:4222"
    assert s.data_dir == Path(".data")
    assert s.database_url == "sqlite+aiosqlite:///.data/execution.db"
    assert s.listen == "127.0.0.1:7402"
    assert s.auth_tokens == {}
    assert s.log_level == "INFO"
    assert s.stream_replicas == 1
    assert DEFAULT_PORTS == {
        "definition": 7401,
        "execution": 7402,
        "approval": 7403,
        "work": 7404,
    }


def test_environment_overrides() -> None:
    env = {
        "TRINITY_NATS_URL": "nats://n1:4222,nats://n2:4222",
        "TRINITY_DATA_DIR": "/var/lib/trinity",
        "TRINITY_WORK_DATABASE_URL": "postgresql://u:p@db:5432/work",
        "TRINITY_WORK_LISTEN": "0.0.0.0:6000",
        "TRINITY_AUTH_TOKENS": "t1=alice, t2=bob:operator+viewer, t3=service:execution:service",
        "TRINITY_SERVICE_TOKEN": " t3 ",
        "TRINITY_LOG_LEVEL": "debug",
        "TRINITY_STREAM_REPLICAS": "3",
    }
    s = load_settings("work", 7404, env=env)
    assert s.database_url == "postgresql+asyncpg://u:p@db:5432/work"
    assert s.listen == "0.0.0.0:6000"
    assert s.auth_tokens == {
        "t1": Identity("alice", frozenset({"viewer", "approver"})),  # no roles: the default
        "t2": Identity("bob", frozenset({"operator", "viewer"})),
        "t3": Identity("service:execution", frozenset({"service"})),
    }
    assert s.service_token == "t3"
    assert s.log_level == "DEBUG"
    assert s.stream_replicas == 3
    assert load_settings("approval", 1, env=env).database_url == (
        "sqlite+aiosqlite:////var/lib/trinity/approval.db"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"TRINITY_AUTH_TOKENS": "no-principal"},
        {"TRINITY_AUTH_TOKENS": "=x"},
        {"TRINITY_AUTH_TOKENS": "t=system:timeout"},  # system principals hold no token
        {"TRINITY_AUTH_TOKENS": "t=System:schedule:admin"},
        {"TRINITY_STREAM_REPLICAS": "three"},
        {"TRINITY_STREAM_REPLICAS": "0"},
    ],
)
def test_invalid_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        load_settings("work", 1, env=env)


class Recording(Mapping[str, str]):
    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def get(self, key, default=None):  # type: ignore[override]
        self.asked.add(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_settings_table_lists_exactly_the_variables_read() -> None:
    env = Recording()
    load_settings("definition", 1, env=env)
    service_target("definition", env=env)
    read = {name.replace("_DEFINITION_", "_<SERVICE>_") for name in env.asked}
    rows = settings_table() + security_settings_table()
    assert read == {row[0] for row in rows}
    assert all(len(row) == 3 and all(row) for row in rows)


def test_subjects_and_streams() -> None:
    assert fact_subject("work", "WorkCompleted") == "trinity.process.work.facts.v1.WorkCompleted"
    assert facts_stream("approval") == "TRINITY_PROCESS_APPROVAL_FACTS"
    assert work_queue_subject("agent_task") == "trinity.process.work.queue.v1.agent_task"
    assert WORK_QUEUE_STREAM == "TRINITY_PROCESS_WORK_QUEUE"
    assert event_source("definition") == "trinity.process/definition"
    assert stream_for_subject(fact_subject("work", "X")) == "TRINITY_PROCESS_WORK_FACTS"
    assert stream_for_subject(work_queue_subject("tool")) == WORK_QUEUE_STREAM
    assert stream_for_subject("other.subject") is None
    with pytest.raises(ValueError):
        fact_subject("work", "Bad.Name")
    with pytest.raises(ValueError):
        work_queue_subject("a b")


def test_headers_and_round_trip() -> None:
    time = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    headers = build_headers("id-1", "google.protobuf.StringValue", "src", "agg-1", time, "c", "k")
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "id-1",
        "ce-source": "src",
        "ce-type": "google.protobuf.StringValue",
        "ce-subject": "agg-1",
        "ce-time": "2024-05-06T07:08:09.123456Z",
        "ce-datacontenttype": "application/protobuf",
        "ce-correlationid": "c",
        "ce-causationid": "k",
        "Nats-Msg-Id": "id-1",
    }
    envelope = Envelope.from_headers(headers, StringValue(value="v").SerializeToString(), "s.x")
    assert envelope.time == time
    assert (envelope.correlation_id, envelope.causation_id) == ("c", "k")
    assert decode(envelope) == StringValue(value="v")


def test_invalid_envelopes() -> None:
    with pytest.raises(EnvelopeError, match="ce-id"):
        Envelope.from_headers({}, b"")
    headers = build_headers("i", "no.such.Type", "s", "a", datetime.now(UTC))
    with pytest.raises(EnvelopeError, match="unknown message type"):
        decode(Envelope.from_headers(headers, b""))
    headers = build_headers("i", "google.protobuf.StringValue", "s", "a", datetime.now(UTC))
    with pytest.raises(EnvelopeError, match="cannot decode"):
        decode(Envelope.from_headers(headers, b"\xff\xff\xff"))
    with pytest.raises(EnvelopeError, match="specversion"):
        Envelope.from_headers({**headers, "ce-specversion": "0.3"}, b"")


@given(st.datetimes(timezones=st.just(UTC)))
def test_time_format_round_trips(time: datetime) -> None:
    text = format_time(time)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert parse_time(text) == time


def test_error_family() -> None:
    error = NotFound("missing", metadata={"id": "1"})
    assert isinstance(error, TrinityError)
    assert (error.reason, error.message, error.metadata) == ("NOT_FOUND", "missing", {"id": "1"})
    assert str(error) == "missing"
    invalid = InvalidArgument("bad", reason="BAD_NAME")
    assert invalid.violations == [] and invalid.reason == "BAD_NAME"


def test_platform_readme_shows_the_settings_table() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert settings_markdown() in readme


def test_json_logging_with_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import logging

    import structlog

    from trinity_platform.logs import configure_logging, get_logger

    root = logging.getLogger()
    saved = (root.handlers[:], root.level, structlog.get_config())
    try:
        configure_logging("INFO", json=True)
        try:
            raise ZeroDivisionError("x")
        except ZeroDivisionError as exc:
            get_logger("trinity.test").error("failed", exc_info=exc, job="j1")
        get_logger("trinity.test").debug("hidden")
        logging.getLogger("nats").warning("from %s", "stdlib")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        structlog.configure(**saved[2])
    assert [(e["event"], e["level"], e["logger"]) for e in lines] == [
        ("failed", "error", "trinity.test"),
        ("from stdlib", "warning", "nats"),
    ]
    assert "ZeroDivisionError" in lines[0]["exception"] and lines[0]["job"] == "j1"
    with pytest.raises(ValueError):
        configure_logging("LOUD")


def test_decode_finds_the_generated_module_by_ce_type_alone() -> None:
    """A subscriber decodes any fact from its ce-type without importing its module first."""
    import subprocess
    import sys

    program = (
        "from trinity_platform.envelope import Envelope, decode, build_headers\n"
        "from datetime import datetime, UTC\n"
        "headers = build_headers('id-1', 'trinity.process.work.v1.WorkCompleted', 'src', 'w-1',"
        " datetime.now(UTC))\n"
        "fact = decode(Envelope.from_headers(headers, b''))\n"
        "print(type(fact).__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "trinity.process.work.v1.facts_pb2"
