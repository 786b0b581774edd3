"""What happened to an approval. Each event carries the execution and step it
belongs to, so the execution service can correlate the facts made from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trinity_approval.domain.model import Artifact, Decision, TimeoutAction


@dataclass(frozen=True)
class ApprovalEvent:
    approval_id: str
    execution_id: str
    step_id: str
    iteration: int
    occurred_at: datetime


@dataclass(frozen=True)
class ApprovalRequested(ApprovalEvent):
    title: str
    approvers: tuple[str, ...]
    deadline: datetime
    artifacts: tuple[Artifact, ...]


@dataclass(frozen=True)
class ApprovalDecided(ApprovalEvent):
    decision: Decision
    decided_by: str
    comment: str


@dataclass(frozen=True)
class ApprovalTimedOut(ApprovalEvent):
    """With NOTIFY and a reminder left: ``reminder`` is its number (1, 2, …) and
    ``new_deadline`` is set; otherwise ``new_deadline`` is None (the timeout is final)."""

    action_taken: TimeoutAction
    reminder: int = 0
    new_deadline: datetime | None = None
    approvers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApprovalCancelled(ApprovalEvent):
    reason: str
