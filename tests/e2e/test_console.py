"""The web console in a real headless browser (Debian's Chromium driven by Playwright),
against the real suite: sign in, start a process, follow it live to its approval,
request changes, follow the loop back to it, approve it in the page as the signed-in
person, and see it complete; then pause,
resume and cancel another from the page. Screenshots are kept under
``test-artifacts/console/`` (the path is printed).

Chromium comes from the project's own setup (`make browser`, which `make test` runs);
without /usr/bin/chromium the tests skip and say so.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from trinity.process.approval.v1 import approval_pb2, approval_service_pb2
from trinity.process.execution.v1 import execution_pb2
from trinity_cli.local_suite import SERVICES, LocalSuite
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.ports import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
TOKENS = {
    "reviewer-token": "reviewer@example.com:author+operator+viewer+approver",
    "lead-token": "lead@example.com:author+operator+viewer+approver",
    "visitor-token": "visitor@example.com:viewer",
}
HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"

PROCESS = """
name: console-review
description: Draft, review by a person, then summarize.
steps:
  - id: draft
    agent_task: {agent: writer, message: "Draft about {{ input.topic }}"}
  - id: review
    depends_on: [draft]
    human_approval:
      approvers: [reviewer@example.com]
      artifacts: ["{{ steps.draft.output }}"]
      on_reject: continue
    timeout: 1h
  - id: decide
    depends_on: [review]
    gateway:
      type: exclusive
      routes:
        - {target: draft, condition: "{{ steps.review.decision == 'needs_changes' }}", max_iterations: 3}
        - {target: summarize, is_default: true}
  - id: summarize
    agent_task: {agent: writer, message: "Summarize {{ steps.draft.output }}"}
"""


@pytest.fixture(scope="module")
def module_suite(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalSuite, NatsServer]]:
    """The suite with the console, on SQLite (the console reads only the services' APIs)."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (as root); "
            "the console's browser tests skipped"
        )
    root = tmp_path_factory.mktemp("console-suite")
    nats_server = NatsServer(root / "nats")
    nats_server.start()
    suite = LocalSuite(
        data_dir=root / "data",
        nats_url=nats_server.url,
        ports={service: free_port() for service in SERVICES},
        console_port=free_port(),
        extra_env={"TRINITY_AUTH_TOKENS": ",".join(f"{t}={p}" for t, p in TOKENS.items())},
    )
    try:
        suite.start()
        suite.wait_healthy(90)
        yield suite, nats_server
    finally:
        suite.stop()
        nats_server.stop()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


async def sign_in(browser, base: str, path: str, token: str):  # type: ignore[no-untyped-def]
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.dialogs = dialogs
    await page.goto(base + path)
    assert "/signin" in page.url  # nothing shows before signing in
    await page.fill("#token", token)
    await page.click("#sign-in")
    await page.wait_for_url(re.compile(re.escape(base + path) + "$"))
    return page


async def test_start_follow_approve_and_complete_in_the_browser(  # type: ignore[no-untyped-def]
    api, module_suite, browser, artifacts
) -> None:
    suite, _nats = module_suite
    base = f"http://127.0.0.1:{suite.console_port}"
    await api.publish(PROCESS)

    page = await sign_in(browser, base, "/processes/console-review", "reviewer-token")
    await page.wait_for_selector("#graph svg g.node[data-step='decide']")
    assert await page.locator("#graph svg g.node").count() == 4
    assert await page.locator("#graph svg polyline.edge.route").count() == 2
    await page.screenshot(path=artifacts / "1-process.png", full_page=True)

    await page.fill("#input", json.dumps({"topic": HOSTILE}))
    await page.click("#start")
    await page.wait_for_url(re.compile(r"/executions/[0-9a-f-]+$"))
    execution_id = page.url.rsplit("/", 1)[1]

    # Live: the graph and the steps follow the execution to its approval.
    await page.wait_for_selector("#graph g.node.waiting[data-step='review']")
    await page.wait_for_selector("#steps tr[data-step='review'] .status.waiting")
    await page.wait_for_selector("#graph g.node.completed[data-step='draft']")
    await page.wait_for_selector("#timeline li:has-text('review waiting for a decision')")
    assert await page.locator("#execution-input").inner_text() == json.dumps(
        {"topic": HOSTILE}, indent=2
    )
    await page.screenshot(path=artifacts / "2-waiting-for-approval.png", full_page=True)

    # First ask for changes: the gateway loops back to the draft, which runs again.
    await page.click("#waiting-approval a")
    await page.wait_for_url(base + "/approvals")
    card = page.locator(
        "article.approval", has=page.locator(f"a[href='/executions/{execution_id}']")
    )
    await card.locator("textarea[name=comment]").fill("Cite your sources")
    await card.locator("button[value=request_changes]").click()
    await page.wait_for_selector("#decided:has-text('Changes requested.')")
    await page.goto(f"{base}/executions/{execution_id}")
    await page.wait_for_selector("#steps tr[data-step='review'] .status.waiting")
    await page.wait_for_selector("#timeline li:has-text('draft started · iteration 2')")
    assert await page.locator("#steps tr[data-step='review'] td").nth(3).inner_text() == "2"

    # Then approve the second draft, with a comment.
    await page.click("#waiting-approval a")
    await page.wait_for_url(base + "/approvals")
    card = page.locator(
        "article.approval", has=page.locator(f"a[href='/executions/{execution_id}']")
    )
    await card.locator("textarea[name=comment]").fill("Looks right <b>to me</b>")
    await page.screenshot(path=artifacts / "3-approvals.png", full_page=True)
    await card.locator("button.approve").click()
    await page.wait_for_selector("#decided:has-text('Approved.')")

    await page.goto(f"{base}/executions/{execution_id}")
    await page.wait_for_selector("#live[data-ended='true']", timeout=45_000)
    assert await page.locator("#status").inner_text() == "completed"
    await page.wait_for_selector("#graph g.node.completed[data-step='summarize']")
    await page.wait_for_selector("#timeline li[data-type='ProcessCompleted']")
    await page.screenshot(path=artifacts / "4-completed.png", full_page=True)
    assert page.dialogs == []  # the hostile input was shown, never run

    # The executions list, filtered by process and status, links to it.
    await page.goto(f"{base}/executions?process=console-review&status=completed")
    await page.wait_for_selector(f"table.executions a[href='/executions/{execution_id}']")
    await page.screenshot(path=artifacts / "5-executions.png", full_page=True)
    await page.goto(f"{base}/executions?process=console-review&status=failed")
    await page.wait_for_selector("p.empty:has-text('No executions.')")

    # The decision was taken as the signed-in person, through the approval service.
    execution = await api.get(execution_id)
    assert execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED
    approvals = await api.approvals.ListApprovals(
        approval_service_pb2.ListApprovalsRequest(execution_id=execution_id)
    )
    decided = sorted(approvals.approvals, key=lambda a: a.iteration)
    assert [(a.status, a.decided_by, a.comment) for a in decided] == [
        (approval_pb2.APPROVAL_STATUS_NEEDS_CHANGES, "reviewer@example.com", "Cite your sources"),
        (approval_pb2.APPROVAL_STATUS_APPROVED, "reviewer@example.com", "Looks right <b>to me</b>"),
    ]


async def test_pause_resume_and_cancel_from_the_page(  # type: ignore[no-untyped-def]
    api, module_suite, browser, artifacts
) -> None:
    suite, _nats = module_suite
    base = f"http://127.0.0.1:{suite.console_port}"
    await api.publish(PROCESS.replace("console-review", "console-actions"))
    execution_id = await api.trigger("console-actions", topic="actions")
    await api.pending_approval(execution_id)

    # A viewer sees the execution but may not act on it: the service says so, the
    # console shows it (it has no privilege of its own to act with).
    visitor = await sign_in(browser, base, f"/executions/{execution_id}", "visitor-token")
    await visitor.click("#pause")
    await visitor.wait_for_selector("#service-error:has-text('PERMISSION_DENIED')")
    await visitor.screenshot(path=artifacts / "6-permission-denied.png", full_page=True)
    assert (await api.get(execution_id)).status == execution_pb2.EXECUTION_STATUS_RUNNING

    page = await sign_in(browser, base, f"/executions/{execution_id}", "lead-token")
    await page.fill("form[data-action='pause'] input[name=reason]", "lunch")
    await page.click("#pause")
    await page.wait_for_selector("#status.paused")
    await page.wait_for_selector("#timeline li:has-text('paused by lead@example.com: lunch')")
    await page.click("#resume")
    await page.wait_for_selector("#status.running")
    await page.fill("form[data-action='cancel'] input[name=reason]", "not needed")
    await page.click("#cancel")
    await page.wait_for_selector("#live[data-ended='true']")
    assert await page.locator("#status").inner_text() == "cancelled"
    await page.screenshot(path=artifacts / "7-cancelled.png", full_page=True)

    # A finished execution cannot be cancelled again: the service's refusal is shown.
    response = await page.request.post(
        f"{base}/executions/{execution_id}/cancel",
        form={"csrf": await page.locator("form.who input[name=csrf]").input_value()},
        headers={"Origin": base},
    )
    assert response.status == 409
    assert "FAILED_PRECONDITION" in await response.text()


async def test_cancel_with_compensation_from_the_page_shows_each_undo(  # type: ignore[no-untyped-def]
    api, module_suite, browser, artifacts
) -> None:
    suite, _nats = module_suite
    base = f"http://127.0.0.1:{suite.console_port}"
    await api.publish(
        PROCESS.replace("console-review", "console-saga").replace(
            '    agent_task: {agent: writer, message: "Draft about {{ input.topic }}"}\n',
            '    agent_task: {agent: writer, message: "Draft about {{ input.topic }}"}\n'
            "    compensate:\n"
            '      agent_task: {agent: writer, message: "Withdraw {{ step.output }}"}\n',
        )
    )
    execution_id = await api.trigger("console-saga", topic="saga")
    await api.pending_approval(execution_id)

    page = await sign_in(browser, base, f"/executions/{execution_id}", "lead-token")
    assert await page.locator("#compensation").is_hidden()
    await page.check("#compensate")
    await page.fill("form[data-action='cancel'] input[name=reason]", "called off")
    await page.click("#cancel")
    await page.wait_for_selector("#live[data-ended='true']")
    assert await page.locator("#status").inner_text() == "cancelled"
    await page.wait_for_selector("#compensation tr[data-undo='draft#1'] .status.compensated")
    assert "cancellation: 1/1 undone" in await page.locator("#compensation-summary").inner_text()
    await page.wait_for_selector("#timeline li:has-text('compensation completed · 1 undone')")
    await page.screenshot(path=artifacts / "8-compensated.png", full_page=True)

    execution = await api.get(execution_id)
    assert execution.status == execution_pb2.EXECUTION_STATUS_CANCELLED
    assert [(s.step_id, s.status) for s in execution.compensation.steps] == [
        ("draft", execution_pb2.STEP_COMPENSATION_STATUS_COMPENSATED)
    ]
