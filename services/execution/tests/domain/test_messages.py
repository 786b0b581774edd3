"""wait_for_message steps: a message's payload completes the step; timeouts; cancels."""

from __future__ import annotations

from datetime import timedelta

from engine_support import Driver, agent, spec

from trinity_execution.domain import (
    CloseMessageSubscription,
    MessageReceived,
    OpenMessageSubscription,
    StepCompleted,
)
from trinity_execution.domain.events import CancelExecution
from trinity_process_model.model import MessageTimeoutAction, Step, WaitForMessageConfig


def wait(step_id: str, *deps: str, **kw: object) -> Step:
    on_timeout = kw.pop("on_timeout", MessageTimeoutAction.FAIL)
    return Step(
        step_id,
        WaitForMessageConfig(
            "ci-result",
            "{{ steps.open_pr.output.number }}",
            on_timeout=on_timeout,  # type: ignore[arg-type]
        ),
        depends_on=deps,
        **kw,  # type: ignore[arg-type]
    )


def pr_process(**kw: object) -> Driver:
    return Driver.of(spec(agent("open_pr"), wait("ci", "open_pr", **kw), agent("merge", "ci")))


def subscription(driver: Driver) -> OpenMessageSubscription:
    (opened,) = driver.commands_of(OpenMessageSubscription)
    return opened


def message(driver: Driver, payload: dict[str, object], attempt: int = 1) -> MessageReceived:
    return MessageReceived(
        now=driver.tick(),
        step_id="ci",
        iteration=1,
        attempt=attempt,
        message_id="m1",
        payload=payload,
    )


def test_the_step_waits_with_its_rendered_key_and_the_payload_becomes_its_output() -> None:
    driver = pr_process()
    driver.start()
    driver.complete("open_pr", output='{"number": 42}')
    opened = subscription(driver)
    assert (opened.message_name, opened.correlation_key) == ("ci-result", "42")
    assert driver.step_status("ci") == "waiting"
    assert driver.state is not None and driver.state.step("ci").awaited_key == "42"

    driver.send(message(driver, {"status": "green", "pr": 42}))
    completed = [f for f in driver.facts_of(StepCompleted) if f.step_id == "ci"]
    assert completed[0].structured_output == {"status": "green", "pr": 42}
    assert driver.step_status("ci") == "completed"
    assert driver.work("merge")  # the path goes on
    # A redelivery of the same message for the same attempt changes nothing.
    assert driver.send(message(driver, {"status": "red"})).ignored


def test_a_message_for_another_attempt_is_ignored() -> None:
    driver = pr_process()
    driver.start()
    driver.complete("open_pr", output='{"number": 1}')
    assert driver.send(message(driver, {"x": 1}, attempt=2)).ignored
    assert driver.step_status("ci") == "waiting"


def test_timeout_fails_by_default_and_closes_the_subscription() -> None:
    driver = pr_process(timeout=timedelta(minutes=5))
    driver.start()
    driver.complete("open_pr", output='{"number": 7}')
    driver.fire("ci", "step_timeout")
    assert driver.status == "failed"
    assert [c.key for c in driver.commands_of(CloseMessageSubscription)] == [
        subscription(driver).key
    ]


def test_timeout_with_continue_completes_without_a_message() -> None:
    driver = pr_process(timeout=timedelta(minutes=5), on_timeout=MessageTimeoutAction.CONTINUE)
    driver.start()
    driver.complete("open_pr", output='{"number": 7}')
    driver.fire("ci", "step_timeout")
    assert driver.step_status("ci") == "completed"
    assert driver.state is not None and driver.state.step("ci").structured == {"timed_out": True}
    assert len(driver.commands_of(CloseMessageSubscription)) == 1
    assert driver.work("merge")


def test_cancel_closes_the_subscription() -> None:
    driver = pr_process()
    driver.start()
    driver.complete("open_pr", output='{"number": 7}')
    driver.send(CancelExecution(now=driver.tick(), by="me"))
    assert [c.key for c in driver.commands_of(CloseMessageSubscription)] == [
        subscription(driver).key
    ]


def test_a_key_that_does_not_render_fails_the_step() -> None:
    driver = Driver.of(
        spec(Step("ci", WaitForMessageConfig("ci-result", "{{ input.missing.deeper }}")))
    )
    driver.start()
    assert driver.status == "failed"
    assert not driver.commands_of(OpenMessageSubscription)
