"""ApprovalService over gRPC: proto → command, call the application, approval → proto.

Errors are raised as the platform's error family; the platform's
ErrorMappingInterceptor turns them into status codes with ErrorInfo / BadRequest.
"""

from __future__ import annotations

from typing import Any

from trinity.process.approval.v1 import approval_service_pb2 as api
from trinity.process.approval.v1.approval_service_pb2_grpc import ApprovalServiceServicer
from trinity_approval.api import translate
from trinity_approval.application.service import ApprovalApplication
from trinity_approval.codec import approval_to_proto
from trinity_platform.errors import PermissionDenied, Unauthenticated
from trinity_platform.interceptors import current_principal


def authenticated_principal() -> str:
    """The caller's identity from the auth interceptor (bearer token → principal)."""
    principal = current_principal()
    if not principal:
        raise Unauthenticated(
            "deciding needs an authenticated caller: send 'authorization: Bearer <token>' "
            "with a token listed in TRINITY_AUTH_TOKENS",
            reason="AUTHENTICATION_REQUIRED",
        )
    return principal


class ApprovalServicer(ApprovalServiceServicer):
    """``requesters``: principals (case-folded) allowed to request and cancel approvals;
    empty allows any caller."""

    def __init__(self, app: ApprovalApplication, requesters: frozenset[str] = frozenset()) -> None:
        self._app = app
        self._requesters = requesters

    def _check_requester(self) -> None:
        if not self._requesters:
            return
        principal = current_principal()
        if not principal:
            raise Unauthenticated(
                "requesting and cancelling approvals needs an authenticated caller",
                reason="AUTHENTICATION_REQUIRED",
            )
        if principal.strip().casefold() not in self._requesters:
            raise PermissionDenied(
                f"{principal!r} may not request or cancel approvals",
                reason="NOT_A_REQUESTER",
                metadata={"principal": principal},
            )

    async def RequestApproval(
        self, request: api.RequestApprovalRequest, context: Any
    ) -> api.RequestApprovalResponse:
        self._check_requester()
        approval = await self._app.request_approval(translate.request_approval(request))
        return api.RequestApprovalResponse(approval=approval_to_proto(approval))

    async def SubmitDecision(
        self, request: api.SubmitDecisionRequest, context: Any
    ) -> api.SubmitDecisionResponse:
        principal = authenticated_principal()
        approval = await self._app.submit_decision(translate.submit_decision(request, principal))
        return api.SubmitDecisionResponse(approval=approval_to_proto(approval))

    async def GetApproval(
        self, request: api.GetApprovalRequest, context: Any
    ) -> api.GetApprovalResponse:
        approval = await self._app.get_approval(translate.approval_id(request))
        return api.GetApprovalResponse(approval=approval_to_proto(approval))

    async def ListPendingApprovals(
        self, request: api.ListPendingApprovalsRequest, context: Any
    ) -> api.ListPendingApprovalsResponse:
        query = translate.list_pending(request)
        page = await self._app.list_pending_approvals(query)
        return api.ListPendingApprovalsResponse(
            approvals=[approval_to_proto(a) for a in page.items],
            next_page_token=translate.page_token(
                page.next_after, translate.pending_filters(request.approver)
            ),
        )

    async def ListApprovals(
        self, request: api.ListApprovalsRequest, context: Any
    ) -> api.ListApprovalsResponse:
        query = translate.list_approvals(request)
        page = await self._app.list_approvals(query)
        return api.ListApprovalsResponse(
            approvals=[approval_to_proto(a) for a in page.items],
            next_page_token=translate.page_token(
                page.next_after, translate.execution_filters(request.execution_id, request.status)
            ),
        )

    async def CancelApproval(
        self, request: api.CancelApprovalRequest, context: Any
    ) -> api.CancelApprovalResponse:
        self._check_requester()
        approval = await self._app.cancel_approval(translate.cancel_approval(request))
        return api.CancelApprovalResponse(approval=approval_to_proto(approval))
