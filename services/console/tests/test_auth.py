"""Signing in, the session cookie, CSRF, and what answers without signing in."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from trinity.process.approval.v1 import approval_pb2
from trinity.process.approval.v1 import approval_service_pb2 as approval_api
from trinity_console.auth import COOKIE, safe_next

from .conftest import FakeBackend, sign_in

Client = TestClient[Any, Any]

PAGES = ["/", "/processes", "/processes/x", "/executions", "/executions/e1", "/approvals"]
POSTS = [
    "/processes/x/start",
    "/executions/e1/cancel",
    "/executions/e1/retry",
    "/approvals/a1/decide",
    "/signout",
]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_sends_a_stranger_to_the_sign_in_page(client: Client, path: str) -> None:
    reply = await client.get(path, allow_redirects=False)
    assert reply.status == 303
    assert reply.headers["Location"].startswith("/signin?next=")


@pytest.mark.parametrize("path", POSTS)
async def test_every_action_refuses_a_stranger(
    client: Client, backend: FakeBackend, path: str
) -> None:
    reply = await client.post(path, data={"csrf": "x"}, allow_redirects=False)
    assert reply.status == 401
    assert backend.calls == []


async def test_the_live_timeline_refuses_a_stranger(client: Client, backend: FakeBackend) -> None:
    reply = await client.get("/executions/e1/events", headers={"Accept": "text/event-stream"})
    assert reply.status == 401
    assert backend.calls == []


async def test_sign_in_page_static_files_and_probe_answer_without_a_session(client: Client) -> None:
    for path in ("/signin", "/healthz", "/static/console.js", "/static/vendor/dagre.min.js"):
        assert (await client.get(path)).status == 200, path


async def test_an_unknown_token_does_not_sign_in(client: Client) -> None:
    reply = await client.post(
        "/signin", data={"token": "guessed-token", "next": "/approvals"}, allow_redirects=False
    )
    assert reply.status == 401
    assert COOKIE not in reply.cookies
    text = await reply.text()
    assert "not known" in text
    assert "guessed-token" not in text  # never echoed back
    assert (await client.get("/approvals", allow_redirects=False)).status == 303


async def test_without_a_token_table_nobody_goes_on_anonymously_when_auth_is_on(
    client: Client,
) -> None:
    reply = await client.post("/signin", data={"anonymous": "1"}, allow_redirects=False)
    assert reply.status == 401


async def test_the_session_cookie_is_http_only_and_same_site_strict(client: Client) -> None:
    reply = await client.post(
        "/signin", data={"token": "reviewer-token", "next": "/approvals"}, allow_redirects=False
    )
    assert reply.status == 303
    assert reply.headers["Location"] == "/approvals"
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert "Path=/" in cookie
    assert "reviewer-token" not in cookie  # encoded, not in clear
    page = await (await client.get("/signin")).text()
    assert "reviewer@example.com" in page


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/executions?status=failed", "/executions?status=failed"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ],
)
def test_after_signing_in_only_a_path_of_this_site_is_followed(target: str, expected: str) -> None:
    assert safe_next(target) == expected


def _decide_reply(request: approval_api.SubmitDecisionRequest) -> Any:
    return approval_api.SubmitDecisionResponse(
        approval=approval_pb2.Approval(id=request.approval_id, execution_id="e1")
    )


async def test_a_post_without_the_csrf_token_is_refused(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["SubmitDecision"] = _decide_reply
    await sign_in(client)
    for data in ({"decision": "approve"}, {"decision": "approve", "csrf": "0" * 64}):
        reply = await client.post("/approvals/a1/decide", data=data, allow_redirects=False)
        assert reply.status == 403
    assert backend.calls == []


async def test_a_post_from_another_site_is_refused(client: Client, backend: FakeBackend) -> None:
    backend.replies["SubmitDecision"] = _decide_reply
    csrf = await sign_in(client)
    reply = await client.post(
        "/approvals/a1/decide",
        data={"decision": "approve", "csrf": csrf},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert reply.status == 403
    assert backend.calls == []


async def test_a_decision_is_taken_with_the_signed_in_persons_token(
    client: Client, backend: FakeBackend
) -> None:
    backend.replies["SubmitDecision"] = _decide_reply
    csrf = await sign_in(client, "lead-token")
    reply = await client.post(
        "/approvals/a1/decide",
        data={"decision": "request_changes", "comment": "cite sources", "csrf": csrf},
        allow_redirects=False,
    )
    assert reply.status == 303
    assert reply.headers["Location"] == "/approvals?decided=request_changes"
    ((method, request, token),) = backend.calls
    assert (method, token) == ("SubmitDecision", "lead-token")
    assert request.decision == approval_pb2.DECISION_REQUEST_CHANGES
    assert request.comment == "cite sources"
    assert request.request_id  # an idempotency key


async def test_the_csrf_token_of_one_session_does_not_work_for_another(
    make_client: Any, backend: FakeBackend
) -> None:
    backend.replies["SubmitDecision"] = _decide_reply
    first, second = await make_client(), await make_client()
    csrf_of_first = await sign_in(first, "lead-token")
    await sign_in(second, "reviewer-token")
    reply = await second.post(
        "/approvals/a1/decide",
        data={"decision": "approve", "csrf": csrf_of_first},
        allow_redirects=False,
    )
    assert reply.status == 403


async def test_signing_out_forgets_the_session(client: Client) -> None:
    csrf = await sign_in(client)
    reply = await client.post("/signout", data={"csrf": csrf}, allow_redirects=False)
    assert reply.status == 303
    assert (await client.get("/approvals", allow_redirects=False)).status == 303


async def test_a_forged_cookie_opens_nothing(client: Client) -> None:
    client.session.cookie_jar.update_cookies({COOKIE: "bm90LWEtdG9rZW4"})  # "not-a-token"
    assert (await client.get("/approvals", allow_redirects=False)).status == 303
    client.session.cookie_jar.update_cookies({COOKIE: "%%%not base64"})
    assert (await client.get("/approvals", allow_redirects=False)).status == 303


async def test_with_authentication_off_a_person_may_go_on_without_a_token(
    make_client: Any, backend: FakeBackend
) -> None:
    backend.replies["ListPendingApprovals"] = approval_api.ListPendingApprovalsResponse()
    client = await make_client(principals={})
    reply = await client.post("/signin", data={"anonymous": "1"}, allow_redirects=False)
    assert reply.status == 303
    assert (await client.get("/approvals")).status == 200
    ((method, request, token),) = backend.calls
    assert (method, request.approver, token) == ("ListPendingApprovals", "", "")


async def test_every_response_carries_the_security_headers(client: Client) -> None:
    for reply in (
        await client.get("/signin"),
        await client.get("/approvals", allow_redirects=False),
        await client.get("/static/console.js"),
    ):
        assert "script-src 'self'" in reply.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
