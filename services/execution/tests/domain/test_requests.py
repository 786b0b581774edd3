"""What the started steps ask for: work payloads, informed parties, process outputs."""

from __future__ import annotations

import pytest
from engine_support import Driver, agent, spec

from trinity_execution.domain import (
    CancelExecution,
    NotificationWork,
    RequestWork,
    ToolRunWork,
)
from trinity_execution.domain.requests import informed_target
from trinity_process_model.model import ActionKind, Channel, Output, Step, ToolRunConfig


@pytest.mark.parametrize(
    ("party", "channel", "target"),
    [
        ("email:ops@example.com", Channel.EMAIL, "ops@example.com"),
        ("slack:https://hooks.slack.com/x", Channel.SLACK, "https://hooks.slack.com/x"),
        ("https://example.com/hook", Channel.WEBHOOK, "https://example.com/hook"),
        ("lead@example.com", Channel.EMAIL, "lead@example.com"),
        ("reviewer-agent", Channel.FILE, "reviewer-agent"),
        ("file:informed.jsonl", Channel.FILE, "informed.jsonl"),
    ],
)
def test_informed_parties_are_reached_on_their_channel(
    party: str, channel: Channel, target: str
) -> None:
    assert informed_target(party) == (channel, target)


def test_tool_run_arguments_are_rendered() -> None:
    step = Step(
        "verify",
        ToolRunConfig(ActionKind.VERIFY, {"path": "src/{{ input.module }}", "strict": "yes"}),
    )
    d = Driver.of(spec(step))
    d.start(module="core")
    assert d.work("verify").payload == ToolRunWork(
        ActionKind.VERIFY, {"path": "src/core", "strict": "yes"}
    )
    assert d.work("verify").kind == "tool_run"


def test_informed_parties_get_one_notification_each_per_completion() -> None:
    d = Driver.of(spec(agent("a", informed=("x@example.com", "bot"))))
    d.start()
    d.complete("a", "result text")
    informed = [c for c in d.commands_of(RequestWork) if "/informed/" in c.key]
    assert [c.key for c in informed] == ["ex-1/a/1/1/informed/0", "ex-1/a/1/1/informed/1"]
    assert all(c.correlation is None for c in informed)
    assert isinstance(informed[0].payload, NotificationWork)
    assert "result text" in informed[0].payload.message


def test_output_that_cannot_render_is_delivered_saying_so() -> None:
    d = Driver.of(
        spec(
            agent("a"),
            outputs=(Output(Channel.EMAIL, "team@example.com", "{{ steps.a.output.missing }}"),),
        )
    )
    d.start()
    d.complete("a", "plain")
    assert d.status == "completed"
    output = next(c for c in d.commands_of(RequestWork) if c.key == "ex-1/outputs/0")
    assert "could not be rendered" in output.payload.message


def test_no_outputs_on_cancel() -> None:
    d = Driver.of(spec(agent("a"), outputs=(Output(Channel.EMAIL, "t@example.com", "done"),)))
    d.start()
    d.send(CancelExecution(now=d.tick()))
    assert not [c for c in d.commands_of(RequestWork) if "/outputs/" in c.key]
